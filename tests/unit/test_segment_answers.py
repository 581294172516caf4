"""segment's answers through the sam3 service (no TorchServe): at most max_masks masks with masks_total and
truncated, and the PNG masks written on the io pool while the batch's other requests are answered."""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from gen3d.serving.buckets import BucketPolicy
from gen3d.serving.masks import mask_from_rle
from gen3d.serving.schema import RawRequest
from gen3d.serving.storage import S3Store
from tests.conftest import png_bytes

pytestmark = pytest.mark.sam3

BUCKET = "gen3d-out"


class RecordingS3:
    """An S3 client keeping each object written and the thread that wrote it; keys ending in ``failing`` fail."""

    def __init__(self, failing: str = "never") -> None:
        self.failing, self.objects, self.threads = failing, {}, set()

    def put_object(self, Bucket, Key, Body, **kwargs) -> None:
        self.threads.add(threading.current_thread().name)
        if Key.endswith(self.failing):
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate"}}, "PutObject")
        self.objects[Key] = Body


@pytest.fixture(scope="module")
def make_service(tiny_loaded, tmp_path_factory):
    from gen3d.sam3.cache import FeatureStore
    from gen3d.sam3.service import Sam3Service

    cache = FeatureStore(
        tmp_path_factory.mktemp("cache"), {"interactive": 10**9, "concept": 10**9}, 10**8, tiny_loaded.model_id,
        tiny_loaded.device,
    )  # fmt: skip

    def make(s3: RecordingS3) -> Sam3Service:
        store = S3Store(client=s3, buckets=BucketPolicy((BUCKET,)), owner="123456789012")
        return Sam3Service(tiny_loaded, store, "out/{user_id}/{session_id}", cache)

    return make


def segment(seed: int, **fields) -> RawRequest:
    body = {"task": "segment", "image_base64": base64.b64encode(png_bytes(seed, size=(48, 64))).decode(), **fields}
    return RawRequest(json.dumps(body).encode(), "application/json", request_id=f"seg-{seed}")


def test_answers_say_how_many_masks_there_were(make_service):
    service = make_service(RecordingS3())
    every, capped = service.handle(
        [segment(1, text="a vase", score_threshold=0), segment(1, text="a vase", score_threshold=0, max_masks=3)]
    )
    queries = service.loaded.preset.num_queries  # 16: the default max_masks (100) keeps them all
    assert (len(every.body["masks"]), every.body["masks_total"], every.body["truncated"]) == (queries, queries, False)
    assert (len(capped.body["masks"]), capped.body["masks_total"], capped.body["truncated"]) == (3, queries, True)
    assert capped.body["masks"] == every.body["masks"][:3]  # the best first
    from gen3d.sam3.presets import PRESETS
    from gen3d.serving.limits import MAX_MASKS

    assert MAX_MASKS == PRESETS["sam3"].num_queries  # max_masks reaches every mask the published model can answer
    for bad in (0, MAX_MASKS + 1, 1.5, "3"):
        reply = service.handle([segment(1, text="a vase", max_masks=bad)])[0]
        assert reply.status == 400 and reply.body["error"]["field"] == "max_masks", reply.body


def test_png_masks_are_written_on_the_io_pool_and_a_failed_write_fails_its_request_alone(make_service):
    ids = {"user_id": "u", "session_id": "s", "output_bucket": BUCKET, "return_png_masks": True}
    s3 = RecordingS3()
    concept, click = make_service(s3).handle(
        [segment(2, text="a cup", score_threshold=0, **ids), segment(3, boxes=[[5, 5, 40, 30]], multimask=True, **ids)]
    )
    assert [concept.status, click.status] == [200, 200]
    masks = concept.body["masks"] + click.body["masks"]
    assert sorted(s3.objects) == sorted(m["png_s3_key"] for m in masks) and len(masks) == 16 + 3
    assert s3.threads and all(name.startswith("sam3-io") for name in s3.threads)  # never the batch's own thread
    for entry in masks:
        png = Image.open(io.BytesIO(s3.objects[entry["png_s3_key"]]))
        assert png.mode == "1" and (np.array(png) == mask_from_rle(entry["rle"], entry["rle"]["size"])).all()

    s3 = RecordingS3(failing="/7.png")
    failed, other = make_service(s3).handle([segment(2, text="a cup", score_threshold=0, **ids), segment(3, text="x")])
    assert failed.status == 502 and failed.body["error"]["field"] == "output_bucket"
    assert "7.png" in failed.body["error"]["message"] and other.status == 200


def test_an_answer_keeps_the_best_masks_whose_rle_fits_its_size_bound(make_service, monkeypatch):
    """TorchServe kills a worker whose answer is larger than max_response_size: masks stop before that."""
    import gen3d.sam3.service as sam3_service

    service = make_service(RecordingS3())
    every = service.handle([segment(4, text="a bowl", score_threshold=0)])[0].body["masks"]
    three = sum(len(m["rle"]["counts"]) for m in every[:3])
    monkeypatch.setattr(sam3_service, "MAX_ANSWER_RLE_BYTES", three + len(every[3]["rle"]["counts"]) - 1)
    body = service.handle([segment(4, text="a bowl", score_threshold=0)])[0].body
    assert body["masks"] == every[:3] and (body["masks_total"], body["truncated"]) == (16, True)
