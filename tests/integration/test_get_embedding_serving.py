"""get_embedding through a real TorchServe, with S3 served by moto over HTTP."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors

from gen3d.bench.serving import metric_totals
from tests.conftest import BUCKET, png_bytes
from tests.integration.http_support import SEED, post, put_image, safetensors_metadata

pytestmark = pytest.mark.sam3


@pytest.fixture(scope="module")
def direct(demo_sam3):
    """The same tiny model loaded in this process, to compare served values with."""
    from gen3d.sam3.features import encode_images
    from gen3d.serving.images import decode_image

    def embed(data: bytes) -> dict[str, torch.Tensor]:
        return encode_images(demo_sam3, [decode_image(data, "x")])[0].interactive

    return embed


def read_embedding(s3, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return load_safetensors(data), safetensors_metadata(data)


def assert_close(served: dict, direct: dict, atol: float) -> None:
    assert sorted(served) == sorted(direct)
    for name, tensor in direct.items():
        torch.testing.assert_close(served[name].float(), tensor.float(), atol=atol, rtol=1e-3)


def test_ping(torchserve):
    assert requests.get(torchserve.inference_url + "/ping", timeout=5).json()["status"] == "Healthy"


def test_seed_payload_round_trip(torchserve, s3, direct):
    data = png_bytes(1)
    key = put_image(s3, "test-data/test-image.png", data)
    resp = post(torchserve, {**SEED, "image_s3_key": key})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["task"] == "get_embedding"
    assert body["output_s3_key"].startswith("gen3d-outputs/admin-test/test-v2-001/embeddings/")
    assert body["output_s3_key"].endswith(body["embedding_id"] + ".safetensors")
    assert body["tensors"] == {
        "image_embed": [1, 256, 8, 8],
        "high_res_feats.0": [1, 32, 32, 32],
        "high_res_feats.1": [1, 64, 16, 16],
    }
    assert body["dtype"] == "float16" and body["original_size"] == [120, 160]
    assert body["model_id"].startswith("sam3/tiny/")
    tensors, meta = read_embedding(s3, body["output_s3_key"])
    size = s3.head_object(Bucket=BUCKET, Key=body["output_s3_key"])["ContentLength"]
    assert body["embedding_size_mb"] == round(size / 1e6, 3)
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert meta["embedding_id"] == body["embedding_id"] and meta["model_id"] == body["model_id"]
    assert json.loads(meta["original_height"]) == 120 and json.loads(meta["resolution"]) == 112
    assert_close(tensors, direct(data), atol=2e-3)


def test_float32_equals_direct_computation_and_images_differ(torchserve, s3, direct):
    outputs = {}
    for seed in (2, 3):
        data = png_bytes(seed)
        key = put_image(s3, f"test-data/img-{seed}.png", data)
        body = post(torchserve, {**SEED, "image_s3_key": key, "embedding_dtype": "float32"}).json()
        tensors, _ = read_embedding(s3, body["output_s3_key"])
        assert tensors["image_embed"].dtype == torch.float32
        assert_close(tensors, direct(data), atol=1e-4)
        outputs[seed] = (body["embedding_id"], tensors)
    (id_a, a), (id_b, b) = outputs.values()
    assert id_a != id_b
    assert (a["image_embed"] - b["image_embed"]).abs().mean() > 1e-3


def test_batch_runs_encoder_once_and_changes_no_value(torchserve, s3, direct):
    before = metric_totals(torchserve)
    images = {seed: png_bytes(seed, size=(90 + seed, 100)) for seed in range(10, 14)}
    for seed, data in images.items():
        put_image(s3, f"test-data/batch-{seed}.png", data)
    payloads = [
        {**SEED, "image_s3_key": f"test-data/batch-{seed}.png", "embedding_dtype": "float32"} for seed in images
    ]
    with ThreadPoolExecutor(len(payloads)) as pool:
        bodies = [r.json() for r in pool.map(lambda p: post(torchserve, p), payloads)]
    assert all(b["status"] == "success" for b in bodies), bodies
    assert max(b["batch_size"] for b in bodies) > 1
    for seed, body in zip(images, bodies, strict=True):
        tensors, _ = read_embedding(s3, body["output_s3_key"])
        assert_close(tensors, direct(images[seed]), atol=1e-4)
    after = metric_totals(torchserve)
    requests_seen = after["BatchRequests"] - before.get("BatchRequests", 0)
    passes = after["EncoderPasses"] - before.get("EncoderPasses", 0)
    assert requests_seen == 4 and passes < 4
    assert after["EncodedImages"] - before.get("EncodedImages", 0) == 4


def test_raw_bytes_binary_and_base64_forms(torchserve, direct):
    data = png_bytes(5)
    as_json = post(torchserve, data, {"Content-Type": "image/png"})
    assert as_json.status_code == 200
    inline = as_json.json()
    assert "output_s3_key" not in inline
    tensors = load_safetensors(base64.b64decode(inline["embedding_base64"]))
    assert_close(tensors, direct(data), atol=2e-3)

    binary = post(torchserve, data, {"Content-Type": "image/png", "Accept": "application/octet-stream"})
    assert binary.status_code == 200
    assert binary.headers["Content-Type"].startswith("application/x-safetensors")
    assert_close(load_safetensors(binary.content), direct(data), atol=2e-3)

    b64 = post(torchserve, {"task": "get_embedding", "image_base64": base64.b64encode(data).decode()})
    assert b64.status_code == 200 and b64.json()["embedding_id"] == inline["embedding_id"]


def test_exif_orientation_and_image_modes(torchserve):
    img = Image.fromarray(np.random.default_rng(7).integers(0, 256, (60, 100, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: the upright picture is 100 high, 60 wide
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    body = post(torchserve, buf.getvalue(), {"Content-Type": "image/jpeg"}).json()
    assert body["original_size"] == [100, 60]
    for mode in ("L", "RGBA", "P"):
        resp = post(torchserve, png_bytes(8, mode=mode), {"Content-Type": "image/png"})
        assert resp.status_code == 200, (mode, resp.text)
    webp = io.BytesIO()
    img.save(webp, "WEBP")
    assert post(torchserve, webp.getvalue(), {"Content-Type": "image/webp"}).json()["original_size"] == [60, 100]


BAD_REQUESTS = [
    ({"image_s3_key": "test-data/test-image.png", "bucket": BUCKET}, 400, "task"),
    ({**SEED, "task": "generate_3d", "image_s3_key": "k"}, 400, "task"),
    ({**SEED, "task": "explode", "image_s3_key": "k"}, 400, "task"),
    ({**SEED, "image_s3_key": "test-data/missing.png"}, 404, "image_s3_key"),
    ({**SEED, "image_s3_key": "test-data/test-image.png", "bucket": "Not_A_Bucket"}, 400, "bucket"),
    ({**SEED, "image_s3_key": "test-data/test-image.png", "user_id": "../../etc"}, 400, "user_id"),
    ({**SEED, "image_s3_key": "test-data/test-image.png", "embedding_dtype": "int8"}, 400, "embedding_dtype"),
    ({"task": "get_embedding", "image_base64": "%%%not base64"}, 400, "image_base64"),
    ({"task": "get_embedding", "image_base64": base64.b64encode(b"not an image").decode()}, 400, "image_base64"),
    ({"task": "get_embedding"}, 400, "image_s3_key"),
]


@pytest.mark.parametrize(("payload", "status", "field"), BAD_REQUESTS)
def test_bad_request_names_field(torchserve, s3, payload, status, field):
    put_image(s3, "test-data/test-image.png", png_bytes(1))
    resp = post(torchserve, payload)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "error" and body["error"]["field"] == field and body["error"]["code"] == status
    if payload.get("task") == "generate_3d":
        assert "sam3d" in body["error"]["message"]


def test_bad_requests_in_a_batch_leave_the_others_and_the_worker_alone(torchserve, s3):
    put_image(s3, "test-data/good.png", png_bytes(21))
    good = {**SEED, "image_s3_key": "test-data/good.png"}
    payloads = [good, {**SEED, "image_s3_key": "test-data/missing.png"}, good, b"{not json"]
    with ThreadPoolExecutor(len(payloads)) as pool:
        resps = list(pool.map(lambda p: post(torchserve, p, {"Content-Type": "application/json"}), payloads))
    assert [r.status_code for r in resps] == [200, 404, 200, 400]
    assert resps[3].json()["error"]["field"] == "body"
    assert requests.get(torchserve.inference_url + "/ping", timeout=5).json()["status"] == "Healthy"
    assert post(torchserve, good).status_code == 200


def test_only_json_and_image_content_types_run_a_task(torchserve, s3):
    """What a web page may POST to 127.0.0.1 without a CORS preflight (text/plain, forms, multipart with a JSON
    part) answers 415 naming the header; JSON as application/json (any charset) and images still work."""
    put_image(s3, "test-data/test-image.png", png_bytes(1))
    body = json.dumps({"task": "get_embedding", "image_base64": base64.b64encode(png_bytes(6)).decode()})
    url = torchserve.inference_url + "/predictions/sam3"
    refused = [
        requests.post(url, data=body, headers={"Content-Type": "text/plain"}, timeout=60),
        requests.post(url, data=body.encode(), headers={"Content-Type": ""}, timeout=60),
        requests.post(url, data={"task": "get_embedding"}, timeout=60),  # application/x-www-form-urlencoded
        requests.post(url, files={"body": ("b.json", body, "application/json")}, timeout=60),
        requests.post(url, files={"body": ("p.png", png_bytes(6), "image/png")}, timeout=60),
    ]
    for resp in refused:
        assert resp.status_code == 415, resp.text
        assert resp.json()["error"] == {
            "code": 415,
            "type": "unsupported_media_type",
            "field": "Content-Type",
            "message": resp.json()["error"]["message"],
        }
    assert "text/plain is not accepted" in refused[0].json()["error"]["message"]
    charset = requests.post(url, data=body, headers={"Content-Type": "application/json; charset=utf-8"}, timeout=60)
    assert charset.status_code == 200, charset.text
    octets = post(torchserve, png_bytes(6), {"Content-Type": "application/octet-stream"})
    assert octets.status_code == 200 and octets.json()["embedding_id"] == charset.json()["embedding_id"]


def test_invocations_route_reaches_the_named_model(torchserve, s3):
    # The fixture serves sam3 and sam3d, so /invocations needs model_name (a SageMaker container serves one
    # model, where the bare route works: tests/integration/test_sagemaker_serve.py).
    put_image(s3, "test-data/test-image.png", png_bytes(1))
    resp = post(torchserve, {**SEED, "image_s3_key": "test-data/test-image.png"}, path="/invocations?model_name=sam3")
    assert resp.status_code == 200 and resp.json()["status"] == "success"
