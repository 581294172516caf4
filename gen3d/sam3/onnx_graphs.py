"""One ONNX graph of the two exported halves of the decoder (:mod:`gen3d.sam3.onnx_decoder`): the embedding's
preparation runs only when the client's ``prepared_*_in`` tensors are empty, so a client that hands back an earlier
run's ``prepared_*`` outputs (and empty embedding tensors) pays for a click alone.

An ``If`` on "the first ``prepared_*_in`` has elements" runs the click's nodes on the given tensors (``then``: the
tensors are read in place, and the ``prepared_*`` outputs are empty) or the preparation's nodes and then the click's
on what they made (``else``); the weights are the outer graph's, shared by both branches. Both sides stay required
inputs: onnxruntime-web feeds only a graph's inputs that have no initializer (its ``inputNames``), so an input with
a default could not be fed from a browser; ``mask_input``/``has_mask_input`` keep their no-mask defaults (a
refinement only Python clients can ask for).

:func:`click_graph` makes the companion file for a session per prepared embedding: the click's graph alone, the
prepared tensors its initializers, stored as external data that the client supplies when it creates the session.
"""

from __future__ import annotations

import math


def prepared_output(name: str) -> str:
    """The graph output of prepared tensor ``name`` (a ``PREPARED_NAMES`` entry)."""
    return f"prepared_{name}"


def prepared_input(name: str) -> str:
    """The graph input that takes an earlier run's :func:`prepared_output` back."""
    return f"prepared_{name}_in"


def _renamed(nodes, prefix: str, keep: set[str], mapping: dict[str, str]) -> list:
    """Copies of ``nodes`` whose values are ``mapping``'s, kept (``keep``: inputs, weights) or prefixed."""
    import onnx

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return mapping.get(name, prefix + name)

    copies = []
    for index, node in enumerate(nodes):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or f"unnamed_{index}")  # node names must be unique in a graph
        copy.input[:] = [rename(name) for name in node.input]
        copy.output[:] = [rename(name) for name in node.output]
        copies.append(copy)
    return copies


def _free_spatial_dims(info) -> None:
    """Declares an image input's [1,C,H,W] as [1,C,"<name> height","<name> width"]: it may be empty."""
    for dim, side in zip(info.type.tensor_type.shape.dim[2:], ("height", "width"), strict=True):
        dim.Clear()
        dim.dim_param = f"{info.name} {side}"


def _value_info(source, name: str, free_dims: dict[int, str] | None = None):
    """A copy of ``source`` named ``name``, its dims ``free_dims`` (index -> name) declared symbolic."""
    import onnx

    info = onnx.ValueInfoProto()
    info.CopyFrom(source)
    info.name = name
    for index, symbol in (free_dims or {}).items():
        dim = info.type.tensor_type.shape.dim[index]
        dim.Clear()
        dim.dim_param = symbol
    return info


def _shared_weights(prepare_graph, click_graph) -> dict[str, str]:
    """Prepare's weights equal to one of click's (the positional encoding, the first layer's): name -> click's."""
    by_content = {(w.data_type, tuple(w.dims), w.raw_data): w.name for w in click_graph.initializer if w.raw_data}
    return {
        w.name: by_content[(w.data_type, tuple(w.dims), w.raw_data)]
        for w in prepare_graph.initializer
        if w.raw_data and (w.data_type, tuple(w.dims), w.raw_data) in by_content
    }


def join(prepare, click, prepared_names: tuple[str, ...], defaults: dict) -> object:
    """The ``onnx.ModelProto`` that runs ``click`` (a model whose first inputs are ``prepared_names``) on either
    the given ``prepared_*_in`` tensors or ``prepare``'s outputs (a model from the embedding to
    ``prepared_names``); ``defaults``: name -> numpy array for the embedding inputs a run may leave out. Outputs:
    ``click``'s, then the prepared tensors made (empty when they were given). ``click`` is changed and returned."""
    import numpy as np
    from onnx import helper, numpy_helper

    if [o.name for o in prepare.graph.output] != list(prepared_names):
        raise ValueError(f"the preparation's outputs are not {prepared_names}")
    if [i.name for i in click.graph.input[: len(prepared_names)]] != list(prepared_names):
        raise ValueError(f"the click graph's first inputs are not {prepared_names}")
    graph = click.graph
    embedding_inputs = list(prepare.graph.input)
    prompt_inputs = list(graph.input[len(prepared_names) :])
    declared = list(graph.input[: len(prepared_names)])
    tokens = declared[0].type.tensor_type.shape.dim[0].dim_value  # G*G
    ratios = [info.type.tensor_type.shape.dim[0].dim_value // tokens for info in declared]
    rows = ["tokens" if ratio == 1 else f"{ratio} x tokens" for ratio in ratios]
    given = [_value_info(i, prepared_input(n), {0: r}) for i, n, r in zip(declared, prepared_names, rows, strict=True)]
    made = [_value_info(i, prepared_output(n), {0: r}) for i, n, r in zip(declared, prepared_names, rows, strict=True)]
    keep = {i.name for i in [*embedding_inputs, *prompt_inputs]} | {w.name for w in graph.initializer}
    shared = _shared_weights(prepare.graph, graph)
    prepare_weights = [w for w in prepare.graph.initializer if w.name not in shared]
    for weight in prepare_weights:  # torch names weights by module path: the two exports' names overlap
        weight.name = "prepare/" + weight.name
    preparation = _renamed(prepare.graph.node, "prepare/", {i.name for i in embedding_inputs}, shared)

    def click_branch(prefix: str, sources: list[str], extra_nodes: list, prepared_out: list[str]):
        mapping = dict(zip(prepared_names, sources, strict=True))
        mapping |= {o.name: prefix + o.name for o in graph.output}
        nodes = extra_nodes + _renamed(graph.node, prefix, keep, mapping)
        outputs = [_value_info(o, prefix + o.name) for o in graph.output]
        outputs += [_value_info(info, name) for info, name in zip(made, prepared_out, strict=True)]
        return helper.make_graph(nodes, prefix.rstrip("/"), [], outputs)

    empties = [
        helper.make_node(
            "Constant",
            [],
            [f"given/empty_{name}"],
            value=numpy_helper.from_array(np.zeros((0, info.type.tensor_type.shape.dim[1].dim_value), np.float32)),
        )
        for name, info in zip(prepared_names, declared, strict=True)
    ]
    then_branch = click_branch(
        "given/", [i.name for i in given], empties, [f"given/empty_{name}" for name in prepared_names]
    )
    made_here = [f"prepare/{name}" for name in prepared_names]
    else_branch = click_branch("prepared/", made_here, preparation, made_here)
    choose = [
        helper.make_node("Size", [given[0].name], ["prepared_given_size"]),
        helper.make_node("Greater", ["prepared_given_size", "zero_elements"], ["prepared_given"]),
        helper.make_node(
            "If",
            ["prepared_given"],
            [o.name for o in [*graph.output, *made]],
            name="click_after_preparing_unless_given",
            then_branch=then_branch,
            else_branch=else_branch,
        ),
    ]
    for info in embedding_inputs:  # empty ([1,C,0,0]) when prepared tensors are given instead
        if info.name not in defaults:
            _free_spatial_dims(info)
    outputs = [*graph.output, *made]
    for field, values in ((graph.input, [*embedding_inputs, *given, *prompt_inputs]), (graph.output, outputs),
                          (graph.node, choose)):  # fmt: skip
        del field[:]
        field.extend(values)
    del graph.value_info[:]  # the click's intermediate values now live in the branches
    graph.initializer.extend(prepare_weights)
    graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "zero_elements"))
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in defaults.items())
    return click


def click_graph(click, prepared_names: tuple[str, ...]) -> object:
    """A copy of ``click`` (a model whose first inputs are ``prepared_names``) whose prepared inputs are initializers
    with external data: tensor ``name``'s float32 bytes in row-major order, at "location" :func:`prepared_output`
    (the decoder's output that holds them), from offset 0. onnxruntime then treats them as constants (their
    products with the weights pre-packed, no copy per run)."""
    import onnx

    if [i.name for i in click.graph.input[: len(prepared_names)]] != list(prepared_names):
        raise ValueError(f"the click graph's first inputs are not {prepared_names}")
    model = onnx.ModelProto()
    model.CopyFrom(click)
    graph = model.graph
    declared = list(graph.input[: len(prepared_names)])
    prompts = list(graph.input[len(prepared_names) :])
    for info in declared:
        dims = [dim.dim_value for dim in info.type.tensor_type.shape.dim]
        if info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or not all(dims):
            raise ValueError(f"prepared input {info.name} is not float32 of a fixed shape")
        tensor = onnx.TensorProto(name=info.name, data_type=onnx.TensorProto.FLOAT, dims=dims)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        length = 4 * math.prod(dims)
        for key, value in (("location", prepared_output(info.name)), ("offset", "0"), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        graph.initializer.append(tensor)
    del graph.input[:]
    graph.input.extend(prompts)
    return model
