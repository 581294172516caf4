"""The ONNX prompt decoder of a served sam3 archive: load the archive's model with the serving loader, export
``InteractiveDecoder`` with torch's dynamo exporter, record which model it belongs to, and cache the file by the
model the archive holds (what `make serve` hands the demo page).

Importing this module is light (torch and onnx are imported by the functions that export). The file's
``metadata_props`` carry ``model_id`` (= the ``model_id`` of the server's answers and of the
get_embedding file's metadata): a client refuses an embedding of another model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import tempfile
import time
import zipfile
from pathlib import Path

from gen3d.archives import ArchiveError, archive_contents
from gen3d.checks import require_handler_keys
from gen3d.errors import StartupError
from gen3d.files import file_sha256, sources_digest
from gen3d.sam3.assets import BPE_VOCAB_NAME

log = logging.getLogger(__name__)

# v2: low-res logits out, post-processing client-side; v3: the embedding's preparation handed back (prepared_*);
# v4: the preparation holds the embedding's products for every layer (other prepared_* tensors), GELU in tanh's form
DECODER_FORMAT = "gen3d.sam3.interactive-decoder-onnx/v4"
# the decoder's companion: its click graph alone, the prepared tensors external initializers (a session per embedding)
CLICK_GRAPH_FORMAT = "gen3d.sam3.click-graph-onnx/v1"
CLICK_GRAPH_USAGE = (
    "a session per prepared embedding: the decoder file's first run on the embedding answers the prepared_* outputs; "
    "create this graph's session with each as the external data named by the output (float32 bytes, row-major), "
    "then each click feeds point_coords, point_labels and orig_im_size only (as the decoder's)"
)
OPSET = 20  # 20: GELU is one op (onnxruntime-web runs the erf form as five passes over the largest tensors)
MAX_POINTS = 1024  # the export's bound on N; the graph itself takes any N >= 1
USAGE = (
    "point_coords [1,N,2]: pixels (x, y) of the original upright image, a box's corners first with labels 2 and 3; "
    "do not add a padding point (the graph appends SAM's not-a-point itself); the first run of an embedding feeds "
    "image_embed, high_res_feats_0, high_res_feats_1 and empty ([0, C]) prepared_*_in, later runs each prepared_* "
    "output of that run as prepared_*_in and empty ([1, C, 0, 0]) embedding tensors, skipping the embedding's "
    "preparation; low_res_logits [1,K,4G,4G]: fill 8-connected background components "
    "of <= max_hole_area pixels with mask_threshold + 10 (and foreground ones of <= max_sprinkle_area with "
    "mask_threshold - 10), resize bilinearly (half-pixel centres) to orig_im_size: the object where > mask_threshold"
)


def _sam3_archive(archive: Path) -> tuple[set[str], dict]:
    """The archive's file names and the ``handler`` section of its model-config.yaml."""
    if not (archive.is_dir() or zipfile.is_zipfile(archive)):
        raise StartupError(f"model archive not found: {archive} (a .mar file or an archive directory)")
    try:
        names, config = archive_contents(archive)
    except ArchiveError as err:
        raise StartupError(str(err)) from err
    handler = config.get("handler") or {}
    require_handler_keys(handler, ("preset", "checkpoint"), archive, ": not a sam3 archive")
    return names, handler


def archive_handler_config(archive: Path) -> dict:
    """The ``handler`` section of the archive's model-config.yaml (a .mar file or an archive directory)."""
    return _sam3_archive(archive)[1]


def model_digest(archive: Path) -> str:
    """What the archive's decoder depends on: its preset and checkpoint (the digest model-config.yaml records, as
    workers take it; hashed here only for an archive that recorded none). Not the archive file's own digest: a
    rebuilt .mar differs in its manifest's time stamp while holding the same model."""
    handler = archive_handler_config(archive)
    checkpoint = handler.get("checkpoint_sha256")
    if not checkpoint:
        if archive.is_dir():
            checkpoint = file_sha256(archive / handler["checkpoint"])
        else:
            with zipfile.ZipFile(archive) as mar, mar.open(handler["checkpoint"]) as source:
                checkpoint = hashlib.file_digest(source, "sha256").hexdigest()
    return hashlib.sha256(f"{handler['preset']}|{checkpoint}".encode()).hexdigest()


def load_archive_model(archive: Path, work: Path):
    """The archive's SAM 3 on the CPU, loaded as a worker loads it (:func:`gen3d.sam3.loading.load_sam3`); a
    .mar's checkpoint and BPE vocabulary are extracted into ``work``."""
    names, handler = _sam3_archive(archive)
    needed = [handler["checkpoint"], BPE_VOCAB_NAME]
    for name in needed:
        if name not in names:
            raise StartupError(f"{name} not found in {archive}")
    folder = archive if archive.is_dir() else work
    if not archive.is_dir():
        with zipfile.ZipFile(archive) as mar:
            for name in needed:
                mar.extract(name, work)
    import torch

    from gen3d.sam3.loading import load_sam3

    return load_sam3(
        handler["preset"],
        folder / handler["checkpoint"],
        str(folder / BPE_VOCAB_NAME),
        torch.device("cpu"),
        handler.get("checkpoint_sha256"),
        handler.get("checkpoint_bytes"),
    )


def _embedding_examples(preset) -> tuple:
    """Example inputs in ``EMBEDDING_INPUTS`` order for ``preset`` (a :class:`~gen3d.sam3.presets.Sam3Preset`)."""
    import torch

    g = preset.grid
    return (
        *(torch.randn(shape) for shape in preset.interactive_shapes.values()),  # image_embed, high_res_feats_0, _1
        torch.zeros(1, 1, 4 * g, 4 * g),
        torch.zeros(1),
    )


def _prompt_examples() -> tuple:
    import torch

    return torch.tensor([[[120.0, 100.0], [50.0, 60.0]]]), torch.tensor([[1.0, 0.0]]), torch.tensor([200, 300])


def _optional_defaults(grid: int) -> dict:
    """The default of each optional input: no mask input."""
    import numpy as np

    return {
        "mask_input": np.zeros((1, 1, 4 * grid, 4 * grid), np.float32),
        "has_mask_input": np.zeros((1,), np.float32),
    }


def _finish(model, k: int, grid: int, metadata: dict[str, str]) -> None:
    """Declared output shapes and the metadata."""
    import onnx

    declared = {
        "low_res_logits": [1, k, 4 * grid, 4 * grid],
        "iou_predictions": [1, k],
        "low_res_masks": [1, k, 4 * grid, 4 * grid],
    }
    for output in model.graph.output:
        if output.name not in declared:
            continue
        for dim, value in zip(output.type.tensor_type.shape.dim, declared[output.name], strict=True):
            dim.Clear()
            dim.dim_value = value
    onnx.helper.set_model_props(model, metadata)
    model.doc_string = f"SAM 3 interactive prompt encoder + mask decoder of {metadata['model_id']}. {metadata['usage']}"


def _export(module, inputs: tuple, input_names, output_names, dynamic_shapes=None):
    import torch

    program = torch.onnx.export(
        module,
        inputs,
        dynamo=True,
        opset_version=OPSET,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=dynamic_shapes,
        external_data=False,
        verbose=False,
    )
    return program.model_proto


def export_decoder(loaded, out: Path, multimask: bool, extra_metadata: dict[str, str] | None = None) -> dict[str, str]:
    """Writes the ONNX decoder of ``loaded`` (a :class:`~gen3d.sam3.loading.LoadedSam3`) to ``out``: K=3 masks with
    ``multimask``, else K=1 (= ``segment``'s default); returns the metadata it records."""
    identity = {"model_id": loaded.model_id, "checkpoint_sha256": loaded.checkpoint_sha256}
    predictor = loaded.model.inst_interactive_predictor
    return export_predictor(predictor, loaded.preset, identity, out, multimask, extra_metadata)


def export_predictor(
    predictor, preset, identity: dict[str, str], out: Path, multimask: bool, extra_metadata: dict[str, str] | None
) -> dict[str, str]:
    """:func:`export_decoder` of a bare ``SAM3InteractiveImagePredictor`` of ``preset``; ``identity`` gives the
    ``model_id`` and ``checkpoint_sha256`` recorded."""
    import onnx
    import torch

    from gen3d.sam3.embedding_file import EMBEDDING_FORMAT
    from gen3d.sam3.onnx_decoder import (
        EMBEDDING_INPUTS,
        OUTPUT_NAMES,
        PREPARED_NAMES,
        PROMPT_INPUTS,
        ClickDecoder,
        PrepareEmbedding,
    )
    from gen3d.sam3.onnx_graphs import click_graph, join

    grid = preset.grid
    k = 3 if multimask else 1
    started = time.perf_counter()
    prepare = PrepareEmbedding(predictor).eval()
    embedding = _embedding_examples(preset)
    with torch.no_grad():
        prepared = prepare(*embedding)
    click = ClickDecoder(predictor, multimask_output=multimask).eval()
    points = torch.export.Dim("num_points", min=1, max=MAX_POINTS)
    prompt_shapes = [{1: points}, {1: points}, None]  # point_coords, point_labels, orig_im_size
    click_model = _export(
        click,
        (*prepared, *_prompt_examples()),
        (*PREPARED_NAMES, *PROMPT_INPUTS),
        OUTPUT_NAMES,
        (tuple([None] * len(PREPARED_NAMES) + prompt_shapes),),  # ClickDecoder.forward(*inputs): one varargs
    )
    clicks_only = click_graph(click_model, PREPARED_NAMES)  # before join, which changes click_model
    preparation = _export(prepare, embedding, EMBEDDING_INPUTS, PREPARED_NAMES)
    model = join(preparation, click_model, PREPARED_NAMES, _optional_defaults(grid))
    metadata = {
        "format": DECODER_FORMAT,
        "embedding_format": EMBEDDING_FORMAT,
        "model_id": identity["model_id"],
        "preset": preset.name,
        "resolution": str(preset.resolution),
        "grid": str(grid),
        "checkpoint_sha256": identity["checkpoint_sha256"],
        "multimask_output": str(multimask).lower(),
        "outputs_k": str(k),
        "mask_threshold": str(float(predictor.mask_threshold)),
        "max_hole_area": str(float(predictor._transforms.max_hole_area)),
        "max_sprinkle_area": str(float(predictor._transforms.max_sprinkle_area)),
        "opset": str(OPSET),
        "exporter": "torch.onnx dynamo",
        "sam3_version": importlib.metadata.version("sam3"),
        "torch_version": torch.__version__,
        "usage": USAGE,
        "export_code": code_digest(),  # the same in the click graph's file: the two were exported together
        **(extra_metadata or {}),
    }
    _finish(model, k, grid, metadata)
    _finish(clicks_only, k, grid, {**metadata, "format": CLICK_GRAPH_FORMAT, "usage": CLICK_GRAPH_USAGE})
    out.parent.mkdir(parents=True, exist_ok=True)
    click_path = click_graph_path(out)
    for path, proto in ((click_path, clicks_only), (out, model)):  # the decoder last: the export is done
        partial = path.with_name(path.name + ".partial")
        onnx.save(proto, str(partial))
        if proto is model:  # the click graph's external data is the client's to give
            onnx.checker.check_model(str(partial), full_check=True)
        partial.replace(path)
    size = click_path.stat().st_size / 1e6
    log.info("exported %s (K=%d, %.1f MB; click graph %.1f MB) in %.1f s", out, k, out.stat().st_size / 1e6, size,
             time.perf_counter() - started)  # fmt: skip
    return metadata


def click_graph_path(decoder: Path) -> Path:
    """Where the click graph of the decoder file ``decoder`` is written: beside it, ``<stem>.click.onnx``."""
    return decoder.with_name(decoder.stem + ".click.onnx")


def code_digest() -> str:
    """The export code's own digest: a cached file made by other code is exported again."""
    modules = ("onnx_decoder.py", "onnx_transformer.py", "onnx_image_tokens.py", "onnx_graphs.py", "onnx_export.py")
    return sources_digest(Path(__file__).parent / module for module in modules)


CACHED_DECODER = "sam3-decoder-k1-{key}.onnx"  # a cached decoder's file name


def cached_decoder_path(cache_dir: Path, archive: Path) -> Path:
    """Where the (K=1) decoder of ``archive`` is cached: keyed by its model (:func:`model_digest`) and the export
    code."""
    key = hashlib.sha256(f"{model_digest(archive)}|{code_digest()}".encode()).hexdigest()[:16]
    return cache_dir / CACHED_DECODER.format(key=key)


def export_archive(archive: Path, out: Path, multimask_out: Path | None = None) -> list[dict[str, str]]:
    """Loads ``archive``'s model once and writes its K=1 decoder to ``out`` (and the K=3 one to ``multimask_out``);
    returns the metadata each file records."""
    with tempfile.TemporaryDirectory(prefix="gen3d-onnx-") as work:
        loaded = load_archive_model(archive, Path(work))
        targets = [(out, False)] + ([(multimask_out, True)] if multimask_out else [])
        return [export_decoder(loaded, path, multimask, {"archive": archive.name}) for path, multimask in targets]


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata a decoder file records (``model_id``, ``format``, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in model.metadata_props}
