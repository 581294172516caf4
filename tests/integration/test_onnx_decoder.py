"""The ONNX prompt decoder exported from the served sam3 archive (scripts/export_decoder_onnx.py), run with
onnxruntime on the get_embedding file, against the same TorchServe's ``segment`` answers.

The decoder gives low-resolution logits (format v4); the client's post-processing (gen3d.sam3.onnx_client: hole
filling, bilinear resize) makes the masks, as the page's postprocess.js does. Clicks run as the page runs them: on
the embedding's preparation (the prepared_* outputs of its first run), not on the embedding.

Tolerance: the decoder's inputs are exactly the server's (the file's float16 features widened to float32, which is
what the server decodes from), but onnxruntime's kernels (MatMul, Softmax) and the client's resize round differently
from torch's, the decoder computes the transformer's image tokens in another order (factored), and its upscaling's
GELUs are tanh's form (sam3: erf's; within 5e-4 per value). A pixel can only flip where its logit lies close to the
threshold 0: the masks must be equal except at pixels whose logit is within 1e-4 of 0 (a tie; on this model the
flipped pixels' logits were within 3e-5), and those may be at most 0.05% of the picture (0.013% seen). Hole
filling is exact (no tolerance needed for it).
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from safetensors.numpy import load as load_safetensors

from gen3d.sam3.embedding_file import EMBEDDING_FORMAT
from gen3d.sam3.onnx_client import click_session, embedding_feeds, logits_from_low_res
from gen3d.sam3.onnx_export import CLICK_GRAPH_FORMAT, DECODER_FORMAT, click_graph_path, read_metadata
from gen3d.serving.masks import mask_from_rle
from tests.conftest import REPO, png_bytes
from tests.integration.http_support import post_ok, safetensors_metadata

pytestmark = pytest.mark.sam3
TIE = 1e-4  # |logit| below which float rounding may decide the pixel
# the documented interface: the prepared_* tensors, in input order
PREPARED = (
    "upscale", "row_stats", "layer0_keys", "layer0_values", "layer0_queries", "layer0_out", "layer1_keys",
    "layer1_values", "layer1_queries", "layer1_out_first", "layer1_out", "final_keys", "final_values",
    "layer1_keys_pe", "layer1_queries_pe", "final_keys_pe", "high_res_1", "high_res_0",
)  # fmt: skip
SAMPLE = (REPO / "web" / "samples" / "still-life.png").read_bytes()


def embedding_file(server, image: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """get_embedding as the binary safetensors answer (what the page asks for): tensors and metadata."""
    data = post_ok(server, image, {"Content-Type": "image/png", "Accept": "application/octet-stream"}).content
    return load_safetensors(data), safetensors_metadata(data)


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the optional inputs' defaults are initializers, which ORT warns about
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def decoder(decoder_onnx) -> ort.InferenceSession:
    """The K=1 decoder's session, made once for the module."""
    return session(decoder_onnx)


@pytest.fixture(scope="module")
def multimask_decoder(decoder_onnx_multimask) -> ort.InferenceSession:
    return session(decoder_onnx_multimask)


def run_decoder(sess, tensors, metadata, points=(), labels=(), box=None, extra_feeds=None, prepared=None):
    """The masks (logits [K, H, W], post-processed by the client) and scores for one prompt, fed as a client feeds
    it: on the embedding's ``tensors``, or on its ``prepared`` tensors when given (with ``extra_feeds``: the
    optional inputs, mask_input and has_mask_input), and the low-res masks."""
    masks, scores, low_res, _ = decoder_run(sess, tensors, metadata, points, labels, box, extra_feeds, prepared)
    return masks, scores, low_res


def decoder_run(sess, tensors, metadata, points=(), labels=(), box=None, extra_feeds=None, prepared=None):
    """:func:`run_decoder`'s answer and the run's prepared_* outputs (empty when it was given ``prepared``)."""
    coords, labs = [], []
    if box is not None:
        coords += [box[:2], box[2:]]
        labs += [2, 3]
    coords += [list(p) for p in points]
    labs += list(labels)
    feeds = {
        **(embedding_feeds(sess, tensors=tensors) if prepared is None else embedding_feeds(sess, prepared=prepared)),
        "point_coords": np.array([coords], np.float32),
        "point_labels": np.array([labs], np.float32),
        "orig_im_size": np.array([int(metadata["original_height"]), int(metadata["original_width"])], np.int64),
        **(extra_feeds or {}),
    }
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, feeds), strict=True))
    size = (int(metadata["original_height"]), int(metadata["original_width"]))
    masks = logits_from_low_res(out["low_res_logits"][0], size, sess.get_modelmeta().custom_metadata_map)
    made = {name: value for name, value in out.items() if name.startswith("prepared_")}
    return masks, out["iou_predictions"][0], out["low_res_masks"][0], made


def preparation(sess, tensors, metadata) -> dict[str, np.ndarray]:
    """The embedding's prepared_* tensors, as its first run (one click) answers them."""
    return decoder_run(sess, tensors, metadata, [(10, 10)], [1])[3]


def assert_same_mask(logits: np.ndarray, served: np.ndarray) -> None:
    ours = logits > 0
    assert ours.shape == served.shape
    differ = ours != served
    assert differ.sum() <= max(1, 5e-4 * served.size), f"{differ.sum()} of {served.size} pixels differ"
    if differ.any():
        assert np.abs(logits[differ]).max() < TIE, "a pixel differs where the logit is not a rounding tie"


@pytest.fixture(scope="module")
def pictures(decoder_export, torchserve):
    """Two pictures (the page's sample, 480x360, and random noise, 300x200) with their embedding files (the
    decoders' export starts first, so that it runs while TorchServe starts)."""
    out = {}
    for name, image in (("still-life", SAMPLE), ("noise", png_bytes(7, (200, 300)))):
        tensors, metadata = embedding_file(torchserve, image)
        out[name] = (image, tensors, metadata)
    return out


def test_the_file_records_the_served_model(torchserve, decoder_onnx, decoder, model_store, pictures):
    metadata = decoder.get_modelmeta().custom_metadata_map
    _, _, embedding_meta = pictures["noise"]
    assert metadata["model_id"] == embedding_meta["model_id"]
    assert metadata["checkpoint_sha256"] == embedding_meta["checkpoint_sha256"]
    assert metadata["format"] == DECODER_FORMAT and metadata["embedding_format"] == EMBEDDING_FORMAT
    assert embedding_meta["format"] == EMBEDDING_FORMAT
    assert metadata["archive"] == "sam3.mar"
    assert (metadata["outputs_k"], metadata["multimask_output"]) == ("1", "false")
    post_processing = ("mask_threshold", "max_hole_area", "max_sprinkle_area")  # the client's, sam3's values
    assert [metadata[key] for key in post_processing] == ["0.0", "256.0", "0.0"]
    model = onnx.load(str(decoder_onnx))
    assert {o.domain or "ai.onnx" for o in model.opset_import} == {"ai.onnx"}  # what onnxruntime-web runs


def test_interface_dynamic_points_and_optional_mask_input(decoder, pictures):
    inputs = {i.name: i for i in decoder.get_inputs()}
    assert list(inputs) == [
        "image_embed",
        "high_res_feats_0",
        "high_res_feats_1",
        *[f"prepared_{name}_in" for name in PREPARED],
        "point_coords",
        "point_labels",
        "orig_im_size",
    ]
    assert inputs["image_embed"].shape == [1, 256, "image_embed height", "image_embed width"]  # may be empty
    assert inputs["prepared_upscale_in"].shape == ["tokens", 256]  # G*G rows, or empty
    assert inputs["prepared_layer0_keys_in"].shape == ["8 x tokens", 16]  # head-major: 8 heads of 16
    assert inputs["prepared_high_res_0_in"].shape == ["4 x tokens", 128]
    assert inputs["point_coords"].shape == [1, "num_points", 2] and inputs["point_labels"].shape == [1, "num_points"]
    assert inputs["orig_im_size"].type == "tensor(int64)"
    assert sorted(i.name for i in decoder.get_overridable_initializers()) == ["has_mask_input", "mask_input"]
    outputs = ["low_res_logits", "iou_predictions", "low_res_masks", *[f"prepared_{name}" for name in PREPARED]]
    assert [o.name for o in decoder.get_outputs()] == outputs
    assert decoder.get_outputs()[0].shape == [1, 1, 32, 32]  # 4G x 4G: the picture's size is the client's
    _, tensors, metadata = pictures["noise"]
    for n in (1, 2, 7, 40):  # N is free: one graph for any number of points
        points = [(10 + 6 * i, 20 + 4 * i) for i in range(n)]
        masks, scores, low_res = run_decoder(decoder, tensors, metadata, points, [1 - i % 2 for i in range(n)])
        assert masks.shape == (1, 200, 300) and scores.shape == (1,) and low_res.shape == (1, 32, 32)
    # refinement: an earlier low_res_masks as mask_input changes the answer; has_mask_input 0 ignores it
    base = run_decoder(decoder, tensors, metadata, [(100, 60)], [1])
    mask_input = {"mask_input": base[2][None, :1].astype(np.float32)}
    ignored = run_decoder(decoder, tensors, metadata, [(100, 60)], [1],
                          extra_feeds={**mask_input, "has_mask_input": np.zeros(1, np.float32)})  # fmt: skip
    np.testing.assert_array_equal(ignored[0], base[0])
    refined = run_decoder(decoder, tensors, metadata, [(100, 60)], [1],
                          extra_feeds={**mask_input, "has_mask_input": np.ones(1, np.float32)})  # fmt: skip
    assert not np.array_equal(refined[0], base[0])


def test_a_prepared_embedding_decodes_clicks_alone_as_the_embedding_does(decoder, pictures):
    """The first run answers the preparation; a run given it (and empty embedding tensors) answers the same masks,
    and answers no preparation; a run given neither fails."""
    _, tensors, metadata = pictures["still-life"]
    masks, scores, low_res, made = decoder_run(decoder, tensors, metadata, [(150, 110), (60, 40)], [1, 0])
    head_major = {f"prepared_{name}": (8 * 64, 16) for name in PREPARED[2:-2]}  # 8 heads x G*G tokens, 16 each
    assert {name: value.shape for name, value in made.items()} == {
        "prepared_upscale": (64, 256), "prepared_row_stats": (64, 8), **head_major,
        "prepared_high_res_1": (64, 256), "prepared_high_res_0": (256, 128),
    }  # fmt: skip
    again = decoder_run(decoder, tensors, metadata, [(150, 110), (60, 40)], [1, 0], prepared=made)
    np.testing.assert_allclose(again[0], masks, atol=1e-5)  # the same nodes, fused differently by onnxruntime
    np.testing.assert_allclose(again[1], scores, atol=1e-6)
    assert all(value.size == 0 for value in again[3].values())
    other = preparation(decoder, *pictures["noise"][1:])  # another picture's preparation: another mask
    assert not np.array_equal(decoder_run(decoder, tensors, metadata, [(150, 110)], [1], prepared=other)[0] > 0,
                              run_decoder(decoder, tensors, metadata, [(150, 110)], [1])[0] > 0)  # fmt: skip
    nothing = {name: value[..., :0, :0] for name, value in tensors.items()}  # empty tensors, empty preparation
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail):
        decoder_run(decoder, nothing, metadata, [(1, 1)], [1])


def test_the_click_graph_answers_the_decoders_masks_from_a_preparation(decoder_onnx, decoder, pictures):
    """The companion file (a session per embedding whose prepared tensors are its initializers) belongs to the
    decoder file, takes the prompts only, and answers the decoder's masks for the preparation it was given."""
    ours, main = read_metadata(click_graph_path(decoder_onnx)), read_metadata(decoder_onnx)
    assert ours["format"] == CLICK_GRAPH_FORMAT and main["format"] == DECODER_FORMAT
    same = ("model_id", "export_code", "grid", "outputs_k")
    assert {k: ours[k] for k in same} == {k: main[k] for k in same}
    _, tensors, metadata = pictures["still-life"]
    made = preparation(decoder, tensors, metadata)
    external = onnx.load(str(click_graph_path(decoder_onnx)), load_external_data=False).graph.initializer
    locations = {t.name: {e.key: e.value for e in t.external_data} for t in external if t.external_data}
    assert locations == {  # what the page gives: each prepared_* output's bytes, by its name
        name: {"location": f"prepared_{name}", "offset": "0", "length": str(made[f"prepared_{name}"].nbytes)}
        for name in PREPARED
    }
    clicks = click_session(click_graph_path(decoder_onnx), made)
    assert [i.name for i in clicks.get_inputs()] == ["point_coords", "point_labels", "orig_im_size"]
    size = np.array([int(metadata["original_height"]), int(metadata["original_width"])], np.int64)
    for points, labels in (([(150, 110)], [1]), ([(150, 110), (60, 40)], [1, 0])):
        _, scores, low_res, _ = decoder_run(decoder, tensors, metadata, points, labels, prepared=made)
        feeds = {"point_coords": np.array([points], np.float32), "point_labels": np.array([labels], np.float32)}
        answer = clicks.run(["iou_predictions", "low_res_masks"], {**feeds, "orig_im_size": size})
        np.testing.assert_allclose(answer[1][0], low_res, atol=1e-4)  # onnxruntime folds the constants' products
        np.testing.assert_allclose(answer[0][0], scores, atol=1e-5)
    other = click_session(click_graph_path(decoder_onnx), preparation(decoder, *pictures["noise"][1:]))
    assert not np.allclose(other.run(["low_res_masks"], {**feeds, "orig_im_size": size})[0][0], low_res, atol=1e-2)


@pytest.fixture(scope="module")
def preparations(decoder, pictures) -> dict[str, dict[str, np.ndarray]]:
    """Each picture's preparation (its first run's prepared_* outputs), which the page's clicks run on."""
    return {name: preparation(decoder, tensors, metadata) for name, (_, tensors, metadata) in pictures.items()}


PROMPTS = {
    "click": {"points": [[150, 110]], "point_labels": [1]},
    "object and background clicks": {"points": [[150, 110], [60, 40], [200, 150]], "point_labels": [1, 0, 1]},
    "box": {"boxes": [[40, 30, 230, 170]]},
    "box and a background click": {"boxes": [[40, 30, 230, 170]], "points": [[220, 60]], "point_labels": [0]},
    "box and an object click": {"boxes": [[40, 30, 230, 170]], "points": [[120, 100]], "point_labels": [1]},
    "two boxes, one run each": {"boxes": [[10, 10, 120, 90], [130, 40, 290, 190]]},
    "seven clicks": {"points": [[20 + 35 * i, 20 + 22 * i] for i in range(7)], "point_labels": [1, 0, 1, 1, 0, 1, 1]},
}


CASES = [(picture, prompt) for picture in ("still-life", "noise") for prompt in PROMPTS]


@pytest.fixture(scope="module")
def served(torchserve, pictures) -> dict[tuple[str, str], dict]:
    """The server's segment answer of every case, requested concurrently (TorchServe batches them)."""

    def ask(case):
        picture, prompt = case
        image = base64.b64encode(pictures[picture][0]).decode()
        return post_ok(torchserve, {"task": "segment", "image_base64": image, **PROMPTS[prompt]}).json()

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(CASES, pool.map(ask, CASES), strict=True))


@pytest.mark.parametrize(("picture", "prompt"), CASES)
def test_masks_equal_the_servers_segment(decoder, pictures, preparations, served, picture, prompt):
    _, tensors, metadata = pictures[picture]
    request = PROMPTS[prompt]
    answer = served[(picture, prompt)]
    points = request.get("points", [])
    labels = request.get("point_labels", [])
    boxes = request.get("boxes") or [None]
    assert len(answer["masks"]) == len(boxes)
    for entry, box in zip(sorted(answer["masks"], key=lambda m: m["prompt_index"]), boxes, strict=True):
        masks, scores, _ = run_decoder(decoder, tensors, metadata, points, labels, box, None, preparations[picture])
        assert_same_mask(masks[0], mask_from_rle(entry["rle"], entry["rle"]["size"]))
        assert entry["score"] == pytest.approx(float(scores[0]), abs=1e-5)


def test_multimask_file_equals_the_servers_three_candidates(torchserve, multimask_decoder, pictures):
    """--multimask: K=3 candidates, as segment's ``multimask: true`` (which sorts them by score)."""
    assert multimask_decoder.get_modelmeta().custom_metadata_map["outputs_k"] == "3"
    image, tensors, metadata = pictures["still-life"]
    requests_ = ({"points": [[150, 110]], "point_labels": [1]}, {"boxes": [[40, 30, 230, 170]]})
    image_b64 = base64.b64encode(image).decode()

    def ask(request: dict) -> dict:
        return post_ok(torchserve, {"task": "segment", "image_base64": image_b64, "multimask": True, **request}).json()

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(ask, requests_))
    for request, answer in zip(requests_, answers, strict=True):
        box = request.get("boxes", [None])[0]
        masks, scores, low_res = run_decoder(
            multimask_decoder, tensors, metadata, request.get("points", []), request.get("point_labels", []), box
        )
        assert masks.shape[0] == 3 and low_res.shape[0] == 3
        assert len(answer["masks"]) == 3
        for entry, k in zip(answer["masks"], np.argsort(-scores), strict=True):
            assert_same_mask(masks[k], mask_from_rle(entry["rle"], entry["rle"]["size"]))
            assert entry["score"] == pytest.approx(float(scores[k]), abs=1e-5)
