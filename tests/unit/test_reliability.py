"""Limits, the bucket allow-list, request ids, 5xx answers without internals, per-image encoder failures, and the
published request schema."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
import torch
from PIL import Image

from gen3d.errors import ServingError
from gen3d.serving import limits
from gen3d.serving.buckets import BucketPolicy
from gen3d.serving.images import decode_image
from gen3d.serving.schema import RawRequest, parse_request, request_id_from
from gen3d.serving.storage import S3Store
from tests.conftest import REPO, png_bytes


def status_of(fn, *args) -> tuple[int, str]:
    with pytest.raises(ServingError) as err:
        fn(*args)
    return err.value.status, err.value.field


def test_pixel_limit_is_exact_and_checked_before_decoding(monkeypatch):
    buf = io.BytesIO()
    Image.new("1", (8001, 8000)).save(buf, "PNG")  # 64,008,000 pixels: Pillow alone would only warn
    assert status_of(decode_image, buf.getvalue(), "image_base64") == (413, "image_base64")
    import gen3d.serving.images as images

    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 20 * 30)
    assert decode_image(png_bytes(1, size=(20, 30)), "f").size == (30, 20)  # at the limit: accepted
    assert status_of(decode_image, png_bytes(1, size=(21, 30)), "f") == (413, "f")


def test_json_depth_is_limited():
    deep = {"task": "get_embedding"}
    for _ in range(limits.MAX_JSON_DEPTH):
        deep = {"task": "get_embedding", "x": deep}
    assert status_of(parse_request, RawRequest(json.dumps(deep).encode(), "application/json"), "get_embedding") == (
        400,
        "body",
    )
    recursion = b'{"task": "x", "a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert status_of(parse_request, RawRequest(recursion, "application/json"), "get_embedding") == (400, "body")


def test_request_ids_come_from_the_client_or_are_made():
    assert request_id_from({"X-Request-Id": "client-42"}) == "client-42"
    assert request_id_from({"x-amzn-sagemaker-inference-id": "sm:abc-1"}) == "sm:abc-1"
    for bad in ({"X-Request-Id": "two words"}, {"X-Request-Id": "x" * 129}, {}):
        assert re.fullmatch(r"[0-9a-f]{32}", request_id_from(bad))


def test_bucket_allow_list_names_and_globs():
    policy = BucketPolicy.from_env({"GEN3D_ALLOWED_BUCKETS": "gen3d-data, out-*"})
    assert policy.allows("gen3d-data") and policy.allows("out-eu-1") and not policy.allows("gen3d-data-2")
    assert status_of(policy.check, "other", "output_bucket") == (403, "output_bucket")
    assert not BucketPolicy.from_env({}).allows("gen3d-data")


class NoS3:
    """An S3 client that fails the test if anything calls it."""

    def __getattr__(self, name):
        raise AssertionError(f"S3 was called ({name}) for a request that names a forbidden bucket")


@pytest.fixture(scope="module")
def service(tiny_loaded, tmp_path_factory):
    from gen3d.sam3.cache import FeatureStore
    from gen3d.sam3.service import Sam3Service

    work = tmp_path_factory.mktemp("service")
    loaded = tiny_loaded
    limits_bytes = {"interactive": 10**9, "concept": 10**9}
    store = FeatureStore(work / "cache", limits_bytes, 10**8, loaded.model_id, loaded.device)
    s3 = S3Store(NoS3(), BucketPolicy(("allowed-bucket",)), owner="123456789012")
    return Sam3Service(loaded, s3, "out/{user_id}/{session_id}", store)


def answer(service, body: dict, request_id: str = "rid-1") -> tuple[int, dict]:
    reply = service.handle([RawRequest(json.dumps(body).encode(), "application/json", request_id=request_id)])[0]
    return reply.status, reply.body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bucket": "other-bucket", "image_s3_key": "k.png"}, "bucket"),
        ({"bucket": "allowed-bucket", "image_s3_key": "k.png", "output_bucket": "other-bucket"}, "output_bucket"),
        ({"image_base64": "eA==", "output_bucket": "other-bucket"}, "output_bucket"),
    ],
)
def test_forbidden_buckets_answer_403_before_any_s3_call(service, change, field):
    status, body = answer(service, {"task": "get_embedding", "user_id": "u", "session_id": "s", **change})
    assert status == 403 and body["error"]["field"] == field and body["request_id"] == "rid-1"


def test_unexpected_failures_answer_in_words_with_the_request_id(service, monkeypatch, caplog):
    import gen3d.sam3.service as sam3_service

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /etc/internal/path")

    monkeypatch.setattr(sam3_service, "segment", broken)
    image = base64.b64encode(png_bytes(2)).decode()
    body = {"task": "segment", "image_base64": image, "points": [[5, 5]], "point_labels": [1]}
    status, answer_body = answer(service, body, request_id="rid-500")
    message = answer_body["error"]["message"]
    assert status == 500 and answer_body["request_id"] == "rid-500"
    assert "secret" not in message and "RuntimeError" not in message and "rid-500" in message
    assert "[request rid-500]" in caplog.text and "secret detail" in caplog.text  # the details are in the log


def test_an_encoder_failure_fails_only_the_image_that_cannot_be_encoded(service, monkeypatch):
    import gen3d.sam3.service as sam3_service

    real = sam3_service.encode_images

    def out_of_memory_on_big_batches_and_tall_images(loaded, images):
        if len(images) > 1 or any(img.height == 77 for img in images):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return real(loaded, images)

    monkeypatch.setattr(sam3_service, "encode_images", out_of_memory_on_big_batches_and_tall_images)
    sizes = [(40, 50), (77, 50), (41, 50)]
    raws = [
        RawRequest(
            json.dumps({"task": "get_embedding", "image_base64": base64.b64encode(png_bytes(10 + i, size)).decode()}),
            "application/json",
            request_id=f"r{i}",
        )
        for i, size in enumerate(sizes)
    ]
    replies = service.handle(raws)
    assert [r.status for r in replies] == [200, 507, 200]
    assert replies[1].body["error"]["field"] == "features" and "out of memory" in replies[1].body["error"]["message"]
    assert service.handle(raws[:1])[0].status == 200  # the worker keeps serving


def test_limits_table_is_the_http_api_page_and_config():
    page = (REPO / "docs" / "http-api.md").read_text()
    assert limits.limits_table() in page
    config = (REPO / "config.properties").read_text()
    assert f"max_request_size={limits.MAX_REQUEST_BYTES}" in config
    assert f"max_response_size={limits.MAX_RESPONSE_BYTES}" in config


def test_published_request_schema_is_current():
    from gen3d.cli.schema import render

    assert (REPO / "docs" / "request-schema.json").read_text() == render()
