"""Unit tests of the pieces under the handlers: schema, storage keys, images, cache, batching, start-up."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen3d.errors import ServingError, StartupError
from gen3d.serving.images import decode_image, image_digest
from gen3d.serving.schema import RawRequest, parse_request
from gen3d.serving.storage import output_key, output_prefix
from tests.conftest import REPO, png_bytes

JSON = "application/json"


def field_of(fn, *args) -> str:
    with pytest.raises(ServingError) as err:
        fn(*args)
    return err.value.field


def test_request_forms():
    raw = parse_request(RawRequest(png_bytes(1), "image/png"), "get_embedding")
    assert raw.task == "get_embedding" and raw.image.inline and not raw.came_by_s3
    seed = parse_request(
        RawRequest({"task": "get_embedding", "image_s3_key": "a/b.png", "bucket": "gen3d-data-bucket"}, JSON),
        "get_embedding",
    )
    assert seed.came_by_s3 and seed.image.s3.uri == "s3://gen3d-data-bucket/a/b.png"
    b64 = parse_request(
        RawRequest(
            b'{"task": "get_embedding", "image_base64": "data:image/png;base64,' + base64.b64encode(b"x") + b'"}',
            "application/json; charset=utf-8",
        ),
        "get_embedding",
    )
    assert b64.image.inline == b"x"
    binary = parse_request(RawRequest(png_bytes(1), "image/png", "application/octet-stream"), "get_embedding")
    assert binary.binary_response


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (b"{oops", "application/json", "body"),
        (b"[1, 2]", "application/json", "body"),
        ({"image_s3_key": "k", "bucket": "gen3d-data-bucket"}, JSON, "task"),
        ({"task": "get_embedding", "image_s3_key": "k"}, JSON, "bucket"),
        ({"task": "get_embedding", "image_s3_key": "/abs", "bucket": "gen3d-data-bucket"}, JSON, "image_s3_key"),
        (
            {"task": "get_embedding", "image_s3_key": "k", "image_base64": "eA==", "bucket": "b-b-b"},
            JSON,
            "image_s3_key",
        ),
        ({"task": "get_embedding", "user_id": "a/b"}, JSON, "user_id"),
        ({"task": "get_embedding", "session_id": ".."}, JSON, "session_id"),
        ({"task": "get_embedding", "output_bucket": "UPPER"}, JSON, "output_bucket"),
    ],
)
def test_request_errors_name_the_field(body, content_type, field):
    assert field_of(parse_request, RawRequest(body, content_type), "get_embedding") == field


SEED_JSON = b'{"task": "get_embedding", "image_base64": "eA=="}'


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (SEED_JSON, "text/plain"),  # what a page can POST cross-site without a preflight
        (SEED_JSON, "text/plain;charset=UTF-8"),
        (SEED_JSON.decode(), "text/plain"),  # TorchServe hands text/* bodies over as str
        (SEED_JSON, ""),
        ({"task": "get_embedding", "image_base64": "eA=="}, "multipart/form-data; boundary=x"),
        (b"task=get_embedding", "application/x-www-form-urlencoded"),
        (png_bytes(1), "text/plain"),
        (png_bytes(1), ""),
    ],
)
def test_bodies_of_other_content_types_answer_415_naming_the_header(body, content_type):
    with pytest.raises(ServingError) as err:
        parse_request(RawRequest(body, content_type), "get_embedding")
    assert (err.value.status, err.value.field, err.value.error_type) == (415, "Content-Type", "unsupported_media_type")
    assert "application/json" in err.value.message


def test_json_and_images_by_their_content_types():
    for content_type in ("application/json", "Application/JSON; charset=utf-8"):
        assert parse_request(RawRequest(SEED_JSON, content_type.lower()), "segment").task == "get_embedding"
    for content_type in ("image/png", "image/webp", "application/octet-stream"):
        req = parse_request(RawRequest(png_bytes(1), content_type), "get_embedding")
        assert req.image.field == "body" and req.image.inline == png_bytes(1)
    as_image = parse_request(RawRequest(SEED_JSON, "application/octet-stream"), "get_embedding")
    assert as_image.image.inline == SEED_JSON  # never read as JSON: decoding it answers 400 naming the body
    assert field_of(parse_request, RawRequest(png_bytes(1), JSON), "get_embedding") == "body"


class MultipartContext:
    """What TorchServe hands a handler for a multipart form whose part "body" says application/json."""

    def get_all_request_header(self, idx):
        return {"body": {"content-type": "application/json"}, "Content-Type": "multipart/form-data; boundary=b"}


def test_the_handler_reads_the_requests_content_type_not_a_parts():
    from gen3d.torchserve.handler import raw_requests

    (raw,) = raw_requests([{"body": {"task": "get_embedding", "image_base64": "eA=="}}], MultipartContext())
    assert raw.content_type == "multipart/form-data; boundary=b"
    assert field_of(parse_request, raw, "get_embedding") == "Content-Type"


def test_output_keys_cannot_leave_the_prefix():
    assert output_prefix("out/{user_id}/{session_id}", "u1", "s1") == "out/u1/s1"
    for bad in ("../x", "a/b", ".hidden", "", "x" * 129):
        assert field_of(output_prefix, "out/{user_id}/{session_id}", bad, "s") == "user_id"
    assert output_key("out/u/s", "embeddings/abc.safetensors") == "out/u/s/embeddings/abc.safetensors"
    for bad in ("../up", "a/../../b", "/abs", "a//b"):
        with pytest.raises(ValueError):
            output_key("out/u/s", bad)


def test_images_exif_modes_and_digest():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue(), "f").size == (20, 30)
    for mode in ("L", "LA", "P", "RGBA", "I;16", "CMYK"):
        converted = img.convert(mode)
        buf = io.BytesIO()
        converted.save(buf, "TIFF")
        assert decode_image(buf.getvalue(), "f").mode == "RGB"
    png = png_bytes(3)
    as_jpeg_free_copy = io.BytesIO()
    Image.open(io.BytesIO(png)).save(as_jpeg_free_copy, "WEBP", lossless=True)
    assert image_digest(decode_image(png, "f")) == image_digest(decode_image(as_jpeg_free_copy.getvalue(), "f"))
    assert field_of(decode_image, b"", "image_base64") == "image_base64"
    assert field_of(decode_image, b"GIF89a broken", "body") == "body"


@pytest.mark.sam3  # SAM 3's tiny model / BPE vocabulary: sam3's packages
def test_batched_encoder_equals_unbatched(tiny_loaded):
    from gen3d.sam3.features import encode_images

    images = [decode_image(png_bytes(i, size=(50 + 10 * i, 70)), "f") for i in range(3)]
    batched = encode_images(tiny_loaded, images)
    for image, together in zip(images, batched, strict=True):
        alone = encode_images(tiny_loaded, [image])[0]
        pairs = [*zip(alone.interactive.values(), together.interactive.values(), strict=True)]
        pairs += [*zip(alone.backbone_fpn, together.backbone_fpn, strict=True)]
        for one, batched_one in pairs:  # held in float16: one rounding step apart at most
            torch.testing.assert_close(batched_one.float(), one.float(), atol=2e-3, rtol=2e-3)


@pytest.mark.sam3  # SAM 3's tiny model / BPE vocabulary: sam3's packages
def test_startup_errors_name_the_path(tmp_path, bpe_path):
    from gen3d.sam3.service import Sam3Service

    with pytest.raises(StartupError, match="handler.checkpoint"):
        Sam3Service.from_model_dir(tmp_path, {"preset": "tiny"}, torch.device("cpu"))
    with pytest.raises(StartupError, match=str(tmp_path / "bpe_simple_vocab_16e6.txt.gz")):
        Sam3Service.from_model_dir(tmp_path, {"preset": "tiny", "checkpoint": "c.pt"}, torch.device("cpu"))
    Path(tmp_path / "bpe_simple_vocab_16e6.txt.gz").write_bytes(Path(bpe_path).read_bytes())
    with pytest.raises(StartupError, match=str(tmp_path / "c.pt")):
        Sam3Service.from_model_dir(tmp_path, {"preset": "tiny", "checkpoint": "c.pt"}, torch.device("cpu"))
    with pytest.raises(StartupError, match="unknown SAM 3 preset"):
        (tmp_path / "c.pt").write_bytes(b"")
        Sam3Service.from_model_dir(tmp_path, {"preset": "huge", "checkpoint": "c.pt"}, torch.device("cpu"))


def test_scripts_have_help():
    import subprocess
    import sys

    scripts = ("build_archives.py", "serve_local.py", "serve", "bench.py", "sam3d_gpu_benchmark.py", "gpu_check.py")
    for script in scripts:
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts" / script), "--help"], capture_output=True, text=True
        )
        assert done.returncode == 0 and "usage" in done.stdout.lower(), script


def test_real_weight_archives_refuse_workers_without_gpu():
    from types import SimpleNamespace

    from gen3d.torchserve.handler import worker_device

    context = SimpleNamespace(system_properties={"gpu_id": None})
    assert worker_device(context).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(StartupError, match="require_gpu"):
            worker_device(context, require_gpu=True)


def test_config_copy_names_the_base_files_absolutely(tmp_path):
    """A config.properties copied elsewhere (logs/, a temporary folder) still finds metrics.yaml and the model store
    of the folder it was copied from; overridden and absolute values are kept as given."""
    from gen3d.torchserve import runner

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.properties").write_text("model_store=model-store\nmetrics_config = metrics.yaml\njob_queue_size=9")
    copy = runner.write_config(home / "config.properties", tmp_path / "copy.properties", {"job_queue_size": "1"})
    assert runner.read_config(copy) == {
        "model_store": str(home / "model-store"),
        "metrics_config": str(home / "metrics.yaml"),
        "job_queue_size": "1",
    }
    copy = runner.write_config(copy, tmp_path / "again.properties", {"model_store": "/srv/store"})
    assert runner.read_config(copy)["model_store"] == "/srv/store"
    assert runner.read_config(copy)["metrics_config"] == str(home / "metrics.yaml")


def test_polygons_of_tells_one_polygon_from_several():
    from gen3d.serving.masks import mask_from_polygon, polygons_of

    one = [[0, 0], [4, 0], [4, 4]]
    two = [one, [[6, 0], [9, 0], [9, 3]]]
    assert polygons_of(one) == [one] and polygons_of(two) == two
    assert polygons_of([]) == [[]] and polygons_of([[]]) == [[[]]] and polygons_of("x") == ["x"]
    single, both = mask_from_polygon(one, (5, 10)), mask_from_polygon(two, (5, 10))
    assert single[1, 3] and not single[1, 8] and both[1, 3] and both[1, 8]
