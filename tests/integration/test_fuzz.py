"""Property-based fuzzing of both models' requests through the real server: whatever a client sends, the answer
is a JSON 2xx or 4xx (never a 5xx, never a Python repr in its message), and no worker restarts. Three kinds of
requests, each with the exact bodies that once got a 500 or hurt the worker as explicit examples:
- bodies drawn from the published schema's field names with values of any JSON type (type confusion, wrong shapes,
  odd combinations);
- a valid image with fuzzed prompts and masks: RLE sizes far beyond the image, polygons, huge and negative numbers;
- raw bodies (random bytes, broken PNGs, JSON nested hundreds deep) under each content type.
Each example sends 1-4 requests at once, so they share TorchServe batches and one's error must leave the others'
answers alone. Bounded: a fixed number of examples per model and kind."""

from __future__ import annotations

import base64
import json
import re
import string
import struct
from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gen3d.serving.limits import MAX_SEED, MAX_STEPS
from tests.conftest import BUCKET, REPO, png_bytes
from tests.integration.http_support import post, worker_pids

SCHEMA = json.loads((REPO / "docs" / "request-schema.json").read_text())
FIELDS = {
    name: sorted(definition["properties"]) for name, definition in SCHEMA["$defs"].items() if name.endswith("Request")
}
TASKS = {"sam3": ["get_embedding", "segment"], "sam3d": ["generate_3d"]}
EXAMPLES = {"schema": 60, "image": 40, "raw": 30}  # per model
PYTHON_REPR = re.compile(r"<[\w.]+ object at 0x|<class '|\bb'|\bb\"")

json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
numbers = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-10, 500)
plausible = {
    "points": st.lists(st.lists(numbers, min_size=0, max_size=3), max_size=70),
    "boxes": st.lists(st.lists(numbers, min_size=3, max_size=5), max_size=18),
    "point_labels": st.lists(st.integers(-1, 2) | st.booleans(), max_size=6),
    "bucket": st.sampled_from([BUCKET, "Not_A_Bucket", "other-bucket", ""]),
    "output_bucket": st.sampled_from([BUCKET, "forbidden-bucket", "x"]),
    "image_s3_key": st.sampled_from(["fuzz/missing.png", "/abs", "", "../../etc/passwd", "a/./b.png", "a/\ud800"]),
    "image_base64": st.sampled_from(["", "%%%", "aGVsbG8=", "data:image/png;base64,AAAA"]),
    "embedding_id": st.text(alphabet=string.hexdigits.lower(), min_size=30, max_size=34),
    "mask_rle": st.fixed_dictionaries({"size": st.lists(st.integers(-2, 300), max_size=3), "counts": json_leaf}),
    "mask_polygon": st.lists(st.lists(numbers, max_size=3), max_size=6),
    "user_id": st.sampled_from(["u1", "../x", "", "a" * 200]),
    "session_id": st.sampled_from(["s1", ".", "a/b"]),
}

# -- a valid image with fuzzed prompts and masks -----------------------------------------------------------
HEIGHT, WIDTH = 16, 24
IMAGE = base64.b64encode(png_bytes(7, size=(HEIGHT, WIDTH))).decode()
huge = st.sampled_from([2**31, 2**63, -(2**63), 2**70, 10**400, 60_000, -1, 0, 1e300, -1e300, 1e-300])
coordinate = st.integers(-5, 30) | st.floats(allow_nan=True, allow_infinity=True) | huge
point = st.lists(coordinate, min_size=2, max_size=2) | st.lists(coordinate, max_size=5)
prompts = {
    "points": st.lists(point, max_size=4),
    "point_labels": st.lists(st.integers(-1, 2) | huge | st.booleans(), max_size=4),
    "boxes": st.lists(st.lists(coordinate, min_size=4, max_size=4) | st.lists(coordinate, max_size=6), max_size=3),
    "box_labels": st.lists(st.booleans() | huge, max_size=3),
    "text": st.sampled_from(["a red chair", "", " ", "\x00", "x" * 300, "chair\ud800"]) | st.text(max_size=12),
    "score_threshold": coordinate,
    "multimask": st.booleans() | huge,
    "embedding_dtype": st.sampled_from(["float16", "float32", "int8", ""]) | huge,
}
rle_size = st.lists(st.integers(-2, 70_000) | huge, max_size=3) | st.sampled_from([[HEIGHT, WIDTH], [60_000, 60_000]])
rle_counts = st.text(alphabet=string.printable, max_size=20) | st.lists(
    st.integers(-3, HEIGHT * WIDTH) | huge, max_size=6
)
polygon = st.lists(point, max_size=6)
masks = {
    "mask_rle": st.fixed_dictionaries({"size": rle_size, "counts": rle_counts}),
    "mask_polygon": polygon | st.lists(polygon, max_size=3),
    "mask_s3_key": st.sampled_from(["fuzz/missing.png", "m/../n.png", "./m.png", "m/."]),
    "seed": huge | st.integers(),
    "ss_steps": st.sampled_from([-1, 0, MAX_STEPS + 1, 2**70, 1.5, "2"]),
    "slat_steps": st.sampled_from([-1, 0, MAX_STEPS + 1, 2**70, 1.5, "2"]),
}
IMAGE_FIELDS = {"sam3": prompts, "sam3d": masks}

# -- raw bodies under each content type ------------------------------------------------------------------
CONTENT_TYPES = ["application/json", "image/png", "image/jpeg", "application/octet-stream", "text/plain", None]


def broken_png() -> bytes:
    """A PNG whose IDAT claims 10 bytes: Pillow raises SyntaxError (not OSError) while loading it."""
    data = bytearray(png_bytes(3, size=(HEIGHT, WIDTH)))
    at = data.index(b"IDAT") - 4
    data[at : at + 4] = struct.pack(">I", 10)
    return bytes(data)


def deep_json(task: str, depth: int) -> bytes:
    return b'{"task": "' + task.encode() + b'", "a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def long_integer(task: str) -> bytes:
    return b'{"task": "' + task.encode() + b'", "seed": ' + b"9" * 5000 + b"}"


def valid_on_image(model: str) -> list[tuple[str, bytes]]:
    """Requests on the image that succeed (a generation costs seconds on the CPU demo: the fuzzed masks are
    almost never valid, so the answers beside a success are checked here)."""
    if model == "sam3":
        body = {"task": "segment", "image_base64": IMAGE, "points": [[WIDTH, HEIGHT]], "point_labels": [1]}
    else:
        polygon = [[0, 0], [WIDTH, 0], [WIDTH / 2, HEIGHT]]  # the edges belong to the image
        body = {"task": "generate_3d", "image_base64": IMAGE, "mask_polygon": polygon, "seed": MAX_SEED}
        body["decode_formats"] = ["gaussian"]
    return [("application/json", json.dumps(body).encode())]


SUCCEED = {data for model in TASKS for _, data in valid_on_image(model)}


def special_bodies(model: str) -> list[tuple[str | None, bytes]]:
    """The requests that got a 500 (or raised the worker's memory by gigabytes) before they were fixed."""
    task = TASKS[model][-1]
    on_image = {"task": task, "image_base64": IMAGE}
    bodies = [deep_json(task, 500), deep_json(task, 950), long_integer(task)]
    if model == "sam3d":
        bodies.append(json.dumps({**on_image, "mask_rle": {"size": [60_000, 60_000], "counts": ""}}).encode())
        bodies.append(json.dumps({**on_image, "mask_polygon": [[0, 0], [1e300, 0], [0, 1e300]]}).encode())
    return [("application/json", body) for body in bodies] + [("image/png", broken_png())]


def schema_bodies(model: str):
    """JSON request bodies for ``model``: a task (known or not) and a random subset of the schema's fields."""
    names = sorted({field for fields in FIELDS.values() for field in fields} - {"task"})

    @st.composite
    def build(draw):
        body = {"task": draw(st.sampled_from([*TASKS[model], *TASKS["sam3d" if model == "sam3" else "sam3"], "zz"]))}
        for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
            body[name] = draw(plausible.get(name, json_values) | json_values)
        return json.dumps(body, allow_nan=True).encode()

    return st.tuples(st.just("application/json"), build() | st.binary(max_size=200))


def image_bodies(model: str):
    """A valid inline image, the model's tasks, and fuzzed prompts (sam3) or masks and options (sam3d)."""
    fields = IMAGE_FIELDS[model]

    @st.composite
    def build(draw):
        body = {"task": draw(st.sampled_from(TASKS[model])), "image_base64": IMAGE}
        if model == "sam3d":
            body["decode_formats"] = ["gaussian"]  # the splat alone: a valid mask's generation stays short
        for name in draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=4, unique=True)):
            body[name] = draw(fields[name])
        return json.dumps(body, allow_nan=True).encode()

    return st.tuples(st.just("application/json"), build())


def raw_bodies():
    """Random bytes, corrupt PNGs and deeply nested JSON, under any content type (or none)."""
    corrupt = st.sampled_from(
        [broken_png(), png_bytes(4, size=(HEIGHT, WIDTH))[:70], b"\x89PNG\r\n\x1a\n" + b"\0" * 30]
    )
    data = st.binary(max_size=300) | corrupt | st.builds(lambda d: deep_json("x", d), st.integers(30, 1200))
    return st.tuples(st.sampled_from(CONTENT_TYPES), data)


def check_answer(server, model: str, content_type: str | None, data: bytes) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    resp = post(server, data, headers, path=f"/predictions/{model}")
    assert resp.status_code < 500, (content_type, data[:300], resp.status_code, resp.text[:500])
    if data in SUCCEED:
        assert resp.status_code == 200, resp.text[:500]
    answer = resp.json()
    assert answer["status"] in ("success", "error") and answer.get("request_id")
    if resp.status_code >= 400:
        error = answer["error"]
        assert error["code"] == resp.status_code and error["field"] and error["type"]
        assert not PYTHON_REPR.search(error["message"]), error


def fuzz(server, model: str, requests, examples: int, special=()) -> None:
    before = worker_pids(server, model)

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(requests, min_size=1, max_size=4))
    def run(batch):
        with ThreadPoolExecutor(len(batch)) as pool:  # together: they share TorchServe batches
            list(pool.map(lambda request: check_answer(server, model, *request), batch))

    for request in special:  # each beside a hostile request: they may share a batch
        run = example([request, ("image/png", broken_png())])(run)
    run()
    assert worker_pids(server, model) == before  # no worker died and was restarted


def test_fuzz_sam3_bodies(torchserve, s3):
    fuzz(torchserve, "sam3", schema_bodies("sam3"), EXAMPLES["schema"])


def test_fuzz_sam3d_bodies(torchserve, s3):
    fuzz(torchserve, "sam3d", schema_bodies("sam3d"), EXAMPLES["schema"])


def test_fuzz_sam3_prompts_on_a_valid_image(torchserve, s3):
    fuzz(torchserve, "sam3", image_bodies("sam3"), EXAMPLES["image"], valid_on_image("sam3"))


def test_fuzz_sam3d_masks_on_a_valid_image(torchserve, s3):
    fuzz(torchserve, "sam3d", image_bodies("sam3d"), EXAMPLES["image"], valid_on_image("sam3d"))


def test_fuzz_sam3_raw_bodies_under_each_content_type(torchserve, s3):
    fuzz(torchserve, "sam3", raw_bodies(), EXAMPLES["raw"], special_bodies("sam3"))


def test_fuzz_sam3d_raw_bodies_under_each_content_type(torchserve, s3):
    fuzz(torchserve, "sam3d", raw_bodies(), EXAMPLES["raw"], special_bodies("sam3d"))
