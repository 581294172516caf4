"""gen3d.sam3.onnx_graphs.join on two small models: the click runs on the given preparation or on the one it makes,
weights of the same name stay apart unless equal, and the inputs a browser must feed have no default."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, checker, helper, numpy_helper

from gen3d.sam3.onnx_graphs import join

NAMES = ("scaled", "shifted")


def model(nodes, inputs, outputs, weights):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
        [numpy_helper.from_array(np.asarray(value, np.float32), name) for name, value in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def pair():
    """prepare: image [1,2,2,3] -> scaled = tokens * w, shifted = tokens + shared ([4,3] each, 4 = the tokens);
    click: (scaled, shifted, point [1]) -> out = scaled * w + shifted * point. ``w`` differs between the two,
    ``shared`` is the same tensor in both."""
    tokens = [helper.make_node("Reshape", ["image", "shape"], ["tokens"])]
    prepare = model(
        tokens
        + [
            helper.make_node("Mul", ["tokens", "w"], ["scaled"]),
            helper.make_node("Add", ["tokens", "shared"], ["shifted"]),
        ],
        [("image", [1, 2, 2, 3])],
        [("scaled", [4, 3]), ("shifted", [4, 3])],
        {"w": [2.0, 2.0, 2.0], "shared": [1.0, 2.0, 3.0], "shape": [4, 3]},
    )
    prepare.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.array([4, 3], np.int64), "shape"))
    click = model(
        [
            helper.make_node("Mul", ["scaled", "w"], ["a"]),
            helper.make_node("Mul", ["shifted", "point"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["c"]),
            helper.make_node("Add", ["c", "shared"], ["out"]),
        ],
        [("scaled", [4, 3]), ("shifted", [4, 3]), ("point", [1])],
        [("out", [4, 3])],
        {"w": [10.0, 10.0, 10.0], "shared": [1.0, 2.0, 3.0]},
    )
    return prepare, click


def test_the_click_runs_on_the_preparation_it_makes_or_is_given():
    prepare, click = pair()
    joined = join(prepare, click, NAMES, {})
    checker.check_model(joined, full_check=True)
    session = ort.InferenceSession(joined.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "prepared_scaled_in", "prepared_shifted_in", "point"]
    assert session.get_overridable_initializers() == []  # a browser can feed every input
    image = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    tokens = image.reshape(4, 3)
    empty = np.zeros((0, 3), np.float32)
    point = np.array([3.0], np.float32)
    out, scaled, shifted = session.run(
        None, {"image": image, "prepared_scaled_in": empty, "prepared_shifted_in": empty, "point": point}
    )
    np.testing.assert_array_equal(scaled, tokens * 2)  # prepare's own w, not click's
    np.testing.assert_array_equal(shifted, tokens + [1, 2, 3])
    np.testing.assert_array_equal(out, tokens * 2 * 10 + (tokens + [1, 2, 3]) * 3 + [1, 2, 3])
    given = {"prepared_scaled_in": scaled + 1, "prepared_shifted_in": shifted, "point": point}
    again, made_scaled, made_shifted = session.run(None, {"image": np.zeros((1, 2, 0, 0), np.float32), **given})
    np.testing.assert_array_equal(again, out + 10)  # the given tensors were used, the (empty) image was not
    assert made_scaled.shape == (0, 3) and made_shifted.shape == (0, 3)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail):  # neither given: the empty image fails
        session.run(None, {"image": np.zeros((1, 2, 0, 0), np.float32), **given, "prepared_scaled_in": empty})


def test_equal_weights_are_stored_once_and_names_are_checked():
    prepare, click = pair()
    joined = join(prepare, click, NAMES, {})
    names = sorted(w.name for w in joined.graph.initializer)
    assert names == ["prepare/shape", "prepare/w", "shared", "w", "zero_elements"]
    with pytest.raises(ValueError, match="outputs are not"):
        join(*pair(), ("shifted", "scaled"), {})
