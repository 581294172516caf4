"""segment through a real TorchServe: prompts, RLE output, shared embedding cache, client-side decoding."""

from __future__ import annotations

import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image
from safetensors.torch import load as load_safetensors

from gen3d.bench.serving import metric_totals
from gen3d.serving.masks import box_of, mask_from_rle
from tests.conftest import BUCKET, png_bytes
from tests.integration.http_support import SEED, post, put_image, wait_for_worker

pytestmark = pytest.mark.sam3

SEGMENT = {**SEED, "task": "segment"}


def delta(before: dict, after: dict, name: str) -> float:
    return after.get(name, 0) - before.get(name, 0)


def check_masks(body: dict, size: tuple[int, int]) -> list[np.ndarray]:
    """RLE decodes to the image size; interactive boxes are the masks' boxes, concept boxes SAM 3's detections."""
    masks = []
    for entry in body["masks"]:
        assert entry["rle"]["size"] == list(size) and isinstance(entry["rle"]["counts"], str)
        mask = mask_from_rle(entry["rle"], entry["rle"]["size"])
        if body["mode"] == "interactive":
            assert entry["box"] == pytest.approx(box_of(mask), abs=0.01)
        else:
            x0, y0, x1, y1 = entry["box"]
            assert -1 <= x0 <= x1 <= size[1] + 1 and -1 <= y0 <= y1 <= size[0] + 1
        assert entry["area"] == int(mask.sum())
        masks.append(mask)
    return masks


@pytest.fixture(scope="module")
def image_key(s3) -> str:
    return put_image(s3, "segment/photo.png", png_bytes(40, size=(96, 128)))


def test_single_click_multimask_returns_three_ranked_masks(torchserve, image_key):
    body = post(
        torchserve, {**SEGMENT, "image_s3_key": image_key, "points": [[60, 40]], "point_labels": [1], "multimask": True}
    ).json()
    assert body["status"] == "success" and body["mode"] == "interactive", body
    assert len(body["masks"]) == 3
    scores = [m["score"] for m in body["masks"]]
    assert scores == sorted(scores, reverse=True)
    check_masks(body, (96, 128))


def test_boxes_give_one_mask_per_box(torchserve, image_key):
    body = post(
        torchserve, {**SEGMENT, "image_s3_key": image_key, "boxes": [[10, 10, 60, 50], [70, 30, 120, 90]]}
    ).json()
    assert [m["prompt_index"] for m in body["masks"]] == [0, 1]
    check_masks(body, (96, 128))


def test_points_with_a_box(torchserve, image_key):
    body = post(
        torchserve,
        {
            **SEGMENT,
            "image_s3_key": image_key,
            "boxes": [[10, 10, 60, 50]],
            "points": [[30, 30], [50, 45]],
            "point_labels": [1, 0],
        },
    ).json()
    assert body["status"] == "success" and len(body["masks"]) == 1


def test_text_concept_returns_every_instance_above_threshold(torchserve, image_key):
    everything = post(
        torchserve, {**SEGMENT, "image_s3_key": image_key, "text": "red chair", "score_threshold": 0.0}
    ).json()
    assert everything["mode"] == "concept"
    assert len(everything["masks"]) == 16  # the tiny preset's query count: all score above 0
    assert everything["masks_total"] == 16 and everything["truncated"] is False  # default max_masks: 100
    check_masks(everything, (96, 128))
    best = post(
        torchserve, {**SEGMENT, "image_s3_key": image_key, "text": "red chair", "score_threshold": 0.0, "max_masks": 4}
    ).json()
    assert best["masks"] == everything["masks"][:4] and best["masks_total"] == 16 and best["truncated"] is True
    cutoff = sorted(m["score"] for m in everything["masks"])[8]
    some = post(
        torchserve, {**SEGMENT, "image_s3_key": image_key, "text": "red chair", "score_threshold": cutoff}
    ).json()
    # scores are reported rounded to 6 decimals: a mask just above the threshold can report a score equal to it
    assert 0 < len(some["masks"]) < 16 and all(m["score"] >= cutoff for m in some["masks"])
    with_box = post(
        torchserve,
        {
            **SEGMENT,
            "image_s3_key": image_key,
            "text": "red chair",
            "score_threshold": 0.0,
            "boxes": [[10, 10, 60, 50]],
            "box_labels": [True],
        },
    ).json()
    assert with_box["status"] == "success" and with_box["masks"] != everything["masks"]


def test_embedded_image_is_never_encoded_again(torchserve, s3):
    key = put_image(s3, "segment/embed-once.png", png_bytes(41))
    first = post(torchserve, {**SEED, "image_s3_key": key}).json()
    assert first["cache_hit"] is False
    before = metric_totals(torchserve)
    for x in (10, 50, 90):
        body = post(
            torchserve, {**SEGMENT, "embedding_id": first["embedding_id"], "points": [[x, 30]], "point_labels": [1]}
        ).json()
        assert body["status"] == "success" and body["cache_hit"] is True
        assert body["embedding_id"] == first["embedding_id"] and body["original_size"] == [120, 160]
    again = post(torchserve, {**SEED, "image_s3_key": key}).json()
    assert again["cache_hit"] is True and again["embedding_id"] == first["embedding_id"]
    after = metric_totals(torchserve)
    assert delta(before, after, "EncodedImages") == 0 and delta(before, after, "EncoderPasses") == 0
    assert delta(before, after, "EmbeddingCacheHits") == 4
    assert delta(before, after, "DeviceCacheHits") == 4  # every click found the features on the worker's device
    assert delta(before, after, "EmbeddingCacheReadBytes") == 0


def test_concurrent_requests_share_encoder_passes(torchserve, s3):
    keys = [put_image(s3, f"segment/concurrent-{i}.png", png_bytes(50 + i)) for i in range(3)]
    same = put_image(s3, "segment/same.png", png_bytes(60))
    before = metric_totals(torchserve)
    payloads = [{**SEGMENT, "image_s3_key": k, "points": [[20, 20]], "point_labels": [1]} for k in keys]
    with ThreadPoolExecutor(3) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda p: post(torchserve, p), payloads))
    mid = metric_totals(torchserve)
    assert delta(before, mid, "EncodedImages") == 3 and delta(before, mid, "EncoderPasses") < 3
    payloads = [{**SEGMENT, "image_s3_key": same, "points": [[20 + 10 * i, 20]], "point_labels": [1]} for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        bodies = [r.json() for r in pool.map(lambda p: post(torchserve, p), payloads)]
    assert all(b["status"] == "success" for b in bodies)
    assert delta(mid, metric_totals(torchserve), "EncodedImages") == 1


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_client_decodes_get_embedding_file_like_the_server(torchserve, s3, demo_sam3, dtype):
    """A client holding the safetensors file (either dtype: the server itself holds float16 features) runs SAM 3's
    prompt encoder + mask decoder without the image encoder and gets the server's mask."""
    key = put_image(s3, "segment/client.png", png_bytes(42))
    emb = post(torchserve, {**SEED, "image_s3_key": key, "embedding_dtype": dtype}).json()
    tensors = load_safetensors(s3.get_object(Bucket=BUCKET, Key=emb["output_s3_key"])["Body"].read())
    points = [[100.0, 60.0], [30.0, 90.0]]
    served = post(
        torchserve, {**SEGMENT, "embedding_id": emb["embedding_id"], "points": points, "point_labels": [1, 0]}
    ).json()

    predictor = demo_sam3.model.inst_interactive_predictor
    predictor._features = {
        "image_embed": tensors["image_embed"].float(),
        "high_res_feats": [tensors["high_res_feats.0"].float(), tensors["high_res_feats.1"].float()],
    }
    predictor._orig_hw = [tuple(emb["original_size"])]
    predictor._is_image_set = True
    try:
        masks, scores, _ = predictor.predict(
            point_coords=np.array(points), point_labels=np.array([1, 0]), multimask_output=False
        )
    finally:
        predictor.reset_predictor()  # the shared model holds no image's features
    assert len(served["masks"]) == 1
    rle = served["masks"][0]["rle"]
    np.testing.assert_array_equal(mask_from_rle(rle, rle["size"]), masks[0] > 0)
    assert served["masks"][0]["score"] == pytest.approx(float(scores[0]), abs=1e-5)


def test_png_masks_written_to_s3(torchserve, s3, image_key):
    body = post(
        torchserve, {**SEGMENT, "image_s3_key": image_key, "boxes": [[10, 10, 60, 50]], "return_png_masks": True}
    ).json()
    entry = body["masks"][0]
    assert entry["png_s3_key"].startswith("gen3d-outputs/admin-test/test-v2-001/masks/")
    png = Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=entry["png_s3_key"])["Body"].read()))
    assert png.mode == "1"  # 1-bit
    np.testing.assert_array_equal(np.array(png) > 0, mask_from_rle(entry["rle"], entry["rle"]["size"]))


BAD_PROMPTS = [
    ({"points": [[500, 10]], "point_labels": [1]}, 400, "points"),
    ({"points": [[10, 10]], "point_labels": [1, 0]}, 400, "point_labels"),
    ({"points": [[10, 10]], "point_labels": [2]}, 400, "point_labels"),
    ({"points": [[i % 90, 5] for i in range(65)], "point_labels": [1] * 65}, 400, "points"),
    ({"boxes": [[50, 10, 20, 40]]}, 400, "boxes"),
    ({"boxes": [[0, 0, 10, 10]] * 17}, 400, "boxes"),
    ({"text": "   "}, 400, "text"),
    ({"text": "cat", "points": [[10, 10]], "point_labels": [1]}, 400, "points"),
    ({}, 400, "text"),
    ({"text": "cat", "score_threshold": 3}, 400, "score_threshold"),
    ({"text": "cat", "max_masks": 0}, 400, "max_masks"),
    ({"text": "cat", "max_masks": 201}, 400, "max_masks"),
    ({"text": "cat", "model_id": "sam3/other/0123456789abcdef"}, 409, "model_id"),
]


@pytest.mark.parametrize(("prompt", "status", "field"), BAD_PROMPTS)
def test_bad_prompts_name_the_field(torchserve, image_key, prompt, status, field):
    resp = post(torchserve, {**SEGMENT, "image_s3_key": image_key, **prompt})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["field"] == field


def test_nan_and_unknown_embedding_id(torchserve, image_key):
    nan = post(
        torchserve,
        f'{{"task": "segment", "image_s3_key": "{image_key}", "bucket": "{BUCKET}", '
        '"user_id": "u", "session_id": "s", "points": [[NaN, 3]], "point_labels": [1]}'.encode(),
        {"Content-Type": "application/json"},
        timeout=60,
    )
    assert nan.status_code == 400 and nan.json()["error"]["field"] == "points"
    unknown = post(torchserve, {**SEGMENT, "embedding_id": "0" * 32, "points": [[1, 1]], "point_labels": [1]})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "embedding_id"
    malformed = post(torchserve, {**SEGMENT, "embedding_id": "../x", "points": [[1, 1]], "point_labels": [1]})
    assert malformed.status_code == 400 and malformed.json()["error"]["field"] == "embedding_id"
    assert requests.get(torchserve.inference_url + "/ping", timeout=5).json()["status"] == "Healthy"


def test_cache_survives_a_worker_restart(torchserve, s3):
    key = put_image(s3, "segment/restart.png", png_bytes(43))
    first = post(torchserve, {**SEED, "image_s3_key": key}).json()
    pid = first["worker_pid"]
    time.sleep(2)  # the features reach the disk in the background, after the answer
    os.kill(pid, signal.SIGKILL)
    wait_for_worker(torchserve, pid, timeout=120)
    before = metric_totals(torchserve)
    body = post(
        torchserve, {**SEGMENT, "embedding_id": first["embedding_id"], "points": [[5, 5]], "point_labels": [1]}
    ).json()
    assert body["status"] == "success" and body["cache_hit"] is True and body["worker_pid"] != pid
    assert delta(before, metric_totals(torchserve), "EncodedImages") == 0
