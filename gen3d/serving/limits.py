"""Every limit a request meets, in one place; docs/http-api.md's table is :func:`limits_table` (a test keeps them
equal) and config.properties' ``max_request_size`` is checked against :data:`MAX_REQUEST_BYTES`."""

from __future__ import annotations

import sys

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # TorchServe's max_request_size (config.properties): body, JSON or raw image
MAX_JSON_DEPTH = 32
MAX_INPUT_BYTES = 256 * 1024 * 1024  # one S3 object read for a request (image or mask)
MAX_IMAGE_PIXELS = 64_000_000  # width x height, checked from the header before the pixels are decoded
MAX_ID_CHARS = 128  # user_id, session_id, request ids
MAX_KEY_BYTES = 1024  # S3 keys
MAX_POINTS = 64
MAX_BOXES = 16
MAX_TEXT_CHARS = 256
MAX_MASKS = 200  # segment's max_masks: the published SAM 3's query count, the most masks it can answer
DEFAULT_MAX_MASKS = 100  # what bounds a segment answer's work when the request does not say
MAX_ANSWER_RLE_BYTES = 128 * 1024 * 1024  # a segment answer's RLE counts, all masks: under MAX_RESPONSE_BYTES
MAX_POLYGON_POINTS = 100_000  # all polygons of mask_polygon together
MAX_STEPS = 200  # ss_steps, slat_steps
MAX_SEED = 2**63 - 1
SCENE_OBJECTS = 32  # generate_3d's masks per request by default (model-config.yaml handler.max_scene_objects)
SCENE_OBJECTS_CAP = 256  # the most handler.max_scene_objects may allow (the request schema's bound)
MAX_PEOPLE = 8  # generate_body: boxes/masks per request (full inference runs the decoders three times each)
MAX_FOCAL_PIXELS = 1e6  # generate_body: focal_length and cam_int entries
INLINE_OUTPUT_BYTES = 16 * 1024 * 1024  # generate_3d files returned inline; above, they must go to S3
MAX_RESPONSE_BYTES = 200 * 1024 * 1024  # TorchServe's max_response_size (config.properties)

LIMITS: list[tuple[str, str, str]] = [
    ("request body", f"{MAX_REQUEST_BYTES // 2**20} MiB", "JSON or raw image (TorchServe answers 413 above)"),
    ("JSON nesting", f"{MAX_JSON_DEPTH} levels", "400 `body`"),
    ("JSON integers", f"{sys.int_info.default_max_str_digits:,} digits", "Python's limit: 400 `body` above"),
    ("S3 input object", f"{MAX_INPUT_BYTES // 2**20} MiB", "image or mask read from S3: 413 naming the field"),
    ("image pixels", f"{MAX_IMAGE_PIXELS:,} (width x height)", "413 naming the field, read from the header"),
    ("`user_id`, `session_id`, `X-Request-Id`", f"{MAX_ID_CHARS} characters", "letters, digits, `.`, `_`, `-`"),
    ("S3 keys", f"{MAX_KEY_BYTES} bytes", "not starting with `/`, no `.` or `..` segment"),
    ("`points`", f"{MAX_POINTS}", "segment"),
    ("`boxes`", f"{MAX_BOXES}", "segment"),
    ("`text`", f"{MAX_TEXT_CHARS} characters", "segment"),
    ("`max_masks`", f"1-{MAX_MASKS} (default {DEFAULT_MAX_MASKS})", "segment: masks per answer, the best scores"),
    (
        "segment masks' RLE",
        f"{MAX_ANSWER_RLE_BYTES // 2**20} MiB per answer",
        "the best masks that fit; `truncated` says when some were left out",
    ),
    (
        "`mask_polygon`",
        f"{MAX_POLYGON_POINTS:,} points",
        "generate_3d, all polygons together, each point inside the image",
    ),
    ("`mask_rle` size, mask PNG", "the image's height and width", "generate_3d, checked before the mask is decoded"),
    (
        "`masks`",
        f"{SCENE_OBJECTS} objects (configurable up to {SCENE_OBJECTS_CAP})",
        "generate_3d, model-config.yaml `handler.max_scene_objects`; and objects x per-object time within the "
        "response timeout (422)",
    ),
    ("`ss_steps`, `slat_steps`", f"1-{MAX_STEPS}", "generate_3d"),
    ("`seed`", f"0-{MAX_SEED}", "generate_3d"),
    ("`boxes`, `masks`", f"{MAX_PEOPLE} people", "generate_body; boxes inside the image, masks of its size"),
    (
        "inline generate_3d, generate_body files",
        f"{INLINE_OUTPUT_BYTES // 2**20} MiB",
        "above: 413 asking for `output_bucket`",
    ),
    ("response", f"{MAX_RESPONSE_BYTES // 2**20} MiB", "TorchServe's max_response_size"),
]


def limits_table() -> str:
    """The Markdown table of :data:`LIMITS`."""
    rows = ["| what | limit | notes |", "| --- | --- | --- |"]
    rows += [f"| {what} | {limit} | {notes} |" for what, limit, notes in LIMITS]
    return "\n".join(rows)
