"""Requests an attacker would send: each is a 4xx naming the field, checked before any work it could inflate
(an RLE or mask PNG sized beyond its image, polygon points far outside it, JSON nested hundreds deep, integers
of thousands of digits, PNGs whose chunks are broken, S3 keys with dot segments), and no answer shows a Python
repr."""

from __future__ import annotations

import base64
import io
import json
import re
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile

from gen3d.errors import ServingError
from gen3d.serving import masks
from gen3d.serving.buckets import BucketPolicy
from gen3d.serving.images import decode_image
from gen3d.serving.schema import RawRequest, parse_request
from gen3d.serving.storage import S3Store
from tests.conftest import png_bytes

# `<_io.BytesIO object at 0x...>`, `<class 'int'>`, `b'\x89'`: what an answer's words must never contain
PYTHON_REPR = re.compile(r"<[\w.]+ object at 0x|<class '|\bb'|\bb\"")


def refusal(fn, *args) -> ServingError:
    """The client error ``fn(*args)`` raises (a 4xx: anything else fails the test)."""
    with pytest.raises(ServingError) as err:
        fn(*args)
    assert 400 <= err.value.status < 500 and not PYTHON_REPR.search(err.value.message), err.value.message
    return err.value


def broken_png() -> bytes:
    """A PNG whose IDAT chunk claims 10 bytes: loading reads on into the compressed data as if it were the next
    chunk's header and Pillow raises SyntaxError ("broken PNG file"), not an OSError."""
    data = bytearray(png_bytes(1, size=(20, 16)))
    at = data.index(b"IDAT") - 4
    data[at : at + 4] = struct.pack(">I", 10)
    return bytes(data)


def nested(depth: int) -> dict:
    """``{"task": ..., "a": {"a": ... {}}}`` ``depth`` levels deep, built without recursion."""
    inner: dict = {}
    for _ in range(depth - 2):
        inner = {"a": inner}
    return {"task": "get_embedding", "a": inner}


@pytest.fixture
def decodes(monkeypatch) -> list:
    """The RLEs pycocotools is asked to decode; those of a test's small images are decoded, a larger one fails the
    test at once (pytest's failure is no Exception that the code under test could catch) instead of allocating."""
    calls: list = []
    real = masks.coco_mask.decode

    def recording(rle):
        calls.append(rle)
        if np.prod(rle["size"]) > 10_000:
            pytest.fail(f"an RLE of size {rle['size']} was decoded")
        return real(rle)

    monkeypatch.setattr(masks.coco_mask, "decode", recording)
    return calls


@pytest.fixture
def loads(monkeypatch) -> list:
    """The images whose pixels Pillow decodes (``ImageFile.load``)."""
    calls: list = []
    real = ImageFile.ImageFile.load

    def recording(img):
        calls.append(img.size)
        return real(img)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    return calls


# -- RLE and mask PNG sizes, polygon coordinates ----------------------------------------------------------


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [60000, 60000], "counts": ""},  # 3.6 GB of uint8 + 3.6 GB of bool before the fix
        {"size": [60000, 60000], "counts": [3_600_000_000]},  # uncompressed counts adding up to its own size
        {"size": [4, 5], "counts": [20]},  # off by one column
    ],
)
def test_an_rle_sized_unlike_the_image_is_refused_before_decoding(rle, decodes):
    err = refusal(masks.mask_from_rle, rle, (4, 4))
    assert err.field == "mask_rle" and err.status == 400
    assert f"mask is {rle['size'][0]}x{rle['size'][1]} (h x w) but the image is 4x4" in err.message
    assert decodes == []  # nothing was decoded, so nothing of the claimed size was allocated


def test_an_rle_of_the_image_size_decodes(decodes):
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    assert (masks.mask_from_rle(masks.rle_from_mask(mask), (4, 4)) == mask).all() and len(decodes) == 1
    assert (masks.mask_from_rle({"size": [4, 4], "counts": [5, 2, 2, 2, 5]}, (4, 4)) == mask).all()
    for bad in ({"size": [4, 4], "counts": [15, True]}, {"size": [4, 4], "counts": [17, -1]}):
        assert refusal(masks.mask_from_rle, bad, (4, 4)).field == "mask_rle"
    assert "cannot decode" in refusal(masks.mask_from_rle, {"size": [4, 4], "counts": "0Pb`n0"}, (4, 4)).message


def test_a_mask_png_sized_unlike_the_image_is_refused_from_its_header(loads):
    buf = io.BytesIO()
    Image.new("L", (3000, 2000), 255).save(buf, "PNG")
    err = refusal(masks.mask_from_png, buf.getvalue(), (4, 4), "mask_s3_key")
    assert err.field == "mask_s3_key" and "mask is 2000x3000 (h x w) but the image is 4x4" in err.message
    assert loads == []  # the pixels were never decoded


def test_polygon_points_must_lie_inside_the_image():
    size = (4, 6)  # h, w
    filled = masks.mask_from_polygon([[0, 0], [6, 0], [6, 4], [0, 4]], size)  # the edges belong to the image
    assert filled.shape == size and filled.all()
    for polygon in (
        [[0, 0], [1e300, 0], [0, 3]],
        [[0, 0], [6.01, 0], [0, 3]],
        [[-1, 0], [5, 0], [0, 3]],
        [[0, 0], [5, 0], [0, 2**70]],
        [[0, 0], [5, 0], [0, float("nan")]],
        [[[0, 0], [5, 0], [0, 3]], [[0, 0], [5, 0], [0, -3]]],  # the second polygon
    ):
        err = refusal(masks.mask_from_polygon, polygon, size, "mask_polygon")
        assert err.field == "mask_polygon" and "inside the 6x4 image" in err.message, polygon
    for polygon in ([[0, 0], [5, 0], [0, True]], [[0, 0], [5, 0], ["0", "3"]], [[0, 0], [5, 0], [0, 3, 1]]):
        assert "[x, y] number pairs" in refusal(masks.mask_from_polygon, polygon, size, "mask_polygon").message


# -- bodies: JSON depth, long integers ------------------------------------------------------------------


def nested_json(depth: int) -> bytes:
    """The bytes of :func:`nested` (json.dumps would recurse as deep)."""
    return b'{"task": "get_embedding", "a": ' + b'{"a": ' * (depth - 2) + b"{}" + b"}" * (depth - 1)


@pytest.mark.parametrize("depth", [33, 500, 950])
def test_deep_json_is_400(depth):
    assert json.loads(nested_json(33)) == nested(33)
    for body in (nested_json(depth), nested(depth)):  # TorchServe parses application/json bodies itself
        err = refusal(parse_request, RawRequest(body, "application/json"), "get_embedding")
        assert err.field == "body" and "nested deeper than 32 levels" in err.message


def test_json_nested_beyond_the_parser_is_400():
    body = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
    assert refusal(parse_request, RawRequest(body, "application/json"), "get_embedding").field == "body"


def test_json_at_the_depth_limit_is_read():
    assert parse_request(RawRequest(nested(32), "application/json"), "get_embedding").get("a") is not None


def test_an_integer_of_thousands_of_digits_is_400():
    body = b'{"task": "generate_3d", "seed": ' + b"9" * 5000 + b"}"
    err = refusal(parse_request, RawRequest(body, "application/json"), "generate_3d")
    assert err.field == "body" and "more than 4300 digits" in err.message


@pytest.mark.parametrize("body", ["", "hello", '{"task": "get_embedding"}'])
def test_text_bodies_are_415_naming_the_header(body):
    """TorchServe decodes text/* bodies to str before the handler sees them; no task runs from one (a page may
    POST text/plain cross-site without a preflight)."""
    err = refusal(parse_request, RawRequest(body, "text/plain"), "get_embedding")
    assert (err.status, err.field) == (415, "Content-Type")


# -- images Pillow cannot read ----------------------------------------------------------------------------


def test_broken_pngs_are_400_naming_the_field():
    with pytest.raises(SyntaxError):  # what Pillow raises for this file (an OSError would not show the fix)
        Image.open(io.BytesIO(broken_png())).load()
    err = refusal(decode_image, broken_png(), "image_base64")
    assert err.field == "image_base64" and err.message.startswith("not a readable image: corrupt or truncated")
    err = refusal(masks.mask_from_png, broken_png(), (20, 16), "mask_s3_key")  # the picture's own size
    assert err.field == "mask_s3_key" and err.message.startswith("not a readable image: corrupt or truncated")


@pytest.mark.parametrize("data", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, png_bytes(2)[:60]])
def test_unreadable_images_are_described_in_words(data):
    err = refusal(decode_image, data, "body")
    assert err.field == "body" and err.message.startswith("not a readable image")
    assert "0x" not in err.message and "<" not in err.message


# -- S3 keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a/../b.png", "../other-bucket/secret.png", "./x.png", "a/./b.png", "a/..", "."])
def test_s3_keys_with_dot_segments_are_refused(key):
    body = {"task": "get_embedding", "image_s3_key": key, "bucket": "gen3d-data-bucket"}
    err = refusal(parse_request, RawRequest(body, "application/json"), "get_embedding")
    assert err.field == "image_s3_key" and "no '.' or '..' segment" in err.message


def test_s3_keys_may_hold_dots_inside_names():
    for key in ("a/.b/c..d/..e.png", "x./y..", "dir.v2/img.png"):
        body = {"task": "get_embedding", "image_s3_key": key, "bucket": "gen3d-data-bucket"}
        assert parse_request(RawRequest(body, "application/json"), "get_embedding").image.s3.key == key
    body = {"task": "get_embedding", "image_s3_key": "a/\ud800.png", "bucket": "gen3d-data-bucket"}
    assert refusal(parse_request, RawRequest(body, "application/json"), "get_embedding").field == "image_s3_key"


# -- through the sam3d service: the worker never works on a hostile request -------------------------------


class NeverGenerates:
    """A generator the tests' requests must never reach."""

    renderers = frozenset()

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")

    def generate(self, image, mask, options):
        raise AssertionError("a refused request reached the generator")


def sam3d_answer(body: dict | bytes, content_type: str = "application/json") -> dict:
    from gen3d.sam3d.loading import LoadedSam3d
    from gen3d.sam3d.presets import PRESETS
    from gen3d.sam3d.service import Sam3dService

    loaded = LoadedSam3d(NeverGenerates(), PRESETS["tiny-cpu-demo"], "0" * 64)
    # client=object(): any S3 call fails the test
    store = S3Store(client=object(), buckets=BucketPolicy.parse("gen3d-data-bucket"), owner="123456789012")
    service = Sam3dService(loaded, store=store, prefix_template="p/{user_id}/{session_id}")
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    reply = service.handle([RawRequest(body=data, content_type=content_type)])[0]
    return {"status": reply.status, **reply.body["error"]}


@pytest.mark.sam3d
def test_sam3d_refuses_an_rle_bomb_on_a_tiny_image_before_decoding(decodes):
    tiny = base64.b64encode(png_bytes(5, size=(4, 4))).decode()
    body = {"task": "generate_3d", "image_base64": tiny, "mask_rle": {"size": [60000, 60000], "counts": ""}}
    answer = sam3d_answer(body)
    assert answer["status"] == 400 and answer["field"] == "mask_rle" and "60000x60000" in answer["message"]
    assert decodes == []


@pytest.mark.sam3d
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mask_polygon": [[0, 0], [1e300, 0], [0, 1e300]]}, "mask_polygon"),
        ({"mask_s3_key": "m/../n.png", "bucket": "gen3d-data-bucket"}, "mask_s3_key"),
        (
            {"image_base64": base64.b64encode(broken_png()).decode(), "mask_polygon": [[1, 1], [9, 1], [9, 9]]},
            "image_base64",
        ),
    ],
)
def test_sam3d_answers_400_naming_the_field(body, field):
    image = {"image_base64": base64.b64encode(png_bytes(5, size=(16, 12))).decode()}
    answer = sam3d_answer({"task": "generate_3d", **image, **body})
    assert answer["status"] == 400 and answer["field"] == field, answer
    assert not PYTHON_REPR.search(answer["message"])


@pytest.mark.sam3d
def test_sam3d_answers_a_broken_raw_png_body_with_400():
    answer = sam3d_answer(broken_png(), "image/png")
    assert answer["status"] == 400 and answer["field"] == "body" and "not a readable image" in answer["message"]


@pytest.mark.sam3d
def test_sam3d_refusals_cost_the_worker_no_full_garbage_collection(monkeypatch):
    """A full collection walks the demo worker's ~800k objects (1.2 s here): only a generation pays it."""
    import gen3d.sam3d.service as sam3d_service

    collections: list = []
    monkeypatch.setattr(sam3d_service.gc, "collect", lambda *args: collections.append(args) or 0)
    answer = sam3d_answer({"task": "generate_3d", "seed": -1})
    assert answer["status"] == 400 and answer["field"] == "seed" and collections == []
