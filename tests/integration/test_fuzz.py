"""Property-based fuzzing of both models' request bodies through the real server: whatever a client sends, the
answer is a JSON 2xx or 4xx, never a 5xx, and no worker restarts. Bodies are drawn from the published schema's
field names with values of any JSON type (and raw bytes), so type confusion, wrong shapes and odd combinations
are all tried. Bounded: a fixed number of examples per model."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BUCKET, REPO
from tests.integration.http_support import post, worker_pids

SCHEMA = json.loads((REPO / "docs" / "request-schema.json").read_text())
FIELDS = {
    name: sorted(definition["properties"])
    for name, definition in SCHEMA["$defs"].items()
    if name.endswith("Request")
}
TASKS = {"sam3": ["get_embedding", "segment"], "sam3d": ["generate_3d"]}
EXAMPLES = 60  # per model

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
    "image_s3_key": st.sampled_from(["fuzz/missing.png", "/abs", "", "../../etc/passwd"]),
    "image_base64": st.sampled_from(["", "%%%", "aGVsbG8=", "data:image/png;base64,AAAA"]),
    "embedding_id": st.text(alphabet=string.hexdigits.lower(), min_size=30, max_size=34),
    "mask_rle": st.fixed_dictionaries({"size": st.lists(st.integers(-2, 300), max_size=3), "counts": json_leaf}),
    "mask_polygon": st.lists(st.lists(numbers, max_size=3), max_size=6),
    "user_id": st.sampled_from(["u1", "../x", "", "a" * 200]),
    "session_id": st.sampled_from(["s1", ".", "a/b"]),
}


def bodies(model: str):
    """JSON request bodies for ``model``: a task (known or not) and a random subset of the schema's fields."""
    names = sorted({field for fields in FIELDS.values() for field in fields} - {"task"})

    @st.composite
    def build(draw):
        body = {"task": draw(st.sampled_from([*TASKS[model], *TASKS["sam3d" if model == "sam3" else "sam3"], "zz"]))}
        for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
            body[name] = draw(plausible.get(name, json_values) | json_values)
        return json.dumps(body, allow_nan=True).encode()

    return build() | st.binary(max_size=200)


def check_answers(server, model: str, data: bytes) -> None:
    resp = post(server, data, {"Content-Type": "application/json"}, path=f"/predictions/{model}")
    assert resp.status_code < 500, (data[:300], resp.status_code, resp.text[:500])
    answer = resp.json()
    assert answer["status"] in ("success", "error") and answer.get("request_id")
    if resp.status_code >= 400:
        assert answer["error"]["code"] == resp.status_code and answer["error"]["field"]


def fuzz(server, model: str) -> None:
    before = worker_pids(server, model)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(bodies(model))
    def run(data):
        check_answers(server, model, data)

    run()
    assert worker_pids(server, model) == before  # no worker died and was restarted


def test_fuzz_sam3_bodies(torchserve, s3):
    fuzz(torchserve, "sam3")


def test_fuzz_sam3d_bodies(torchserve, s3):
    fuzz(torchserve, "sam3d")
