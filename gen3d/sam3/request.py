"""The sam3 tasks' own fields: ``embedding_dtype`` of get_embedding, and the ``segment`` task's prompts.

Two modes, as SAM 3 offers them:
- concept: ``text`` (all instances of a noun phrase), optionally with exemplar ``boxes`` (+ ``box_labels``);
  masks scoring above ``score_threshold`` are returned.
- interactive (no ``text``): ``points`` with ``point_labels`` and/or ``boxes``, SAM 1-style, one object per
  box (or one for the points); ``multimask`` returns 3 candidates for a single ambiguous click.
Coordinates are pixels of the original (EXIF-rotated) image, boxes are [x0, y0, x1, y1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gen3d.errors import InvalidField
from gen3d.serving.schema import ParsedRequest, flag

EMBEDDING_DTYPES = ("float16", "float32")
MAX_POINTS = 64
MAX_BOXES = 16
MAX_TEXT_CHARS = 256


@dataclass
class SegmentPrompts:
    """Checked prompts of one segment request."""

    text: str | None
    points: np.ndarray | None  # (N, 2) float
    point_labels: np.ndarray | None  # (N,) int 0/1
    boxes: np.ndarray | None  # (M, 4) float xyxy
    box_labels: list[bool]
    multimask: bool
    score_threshold: float
    return_png_masks: bool

    @property
    def concept(self) -> bool:
        return self.text is not None


def _numbers(value: object, field: str, width: int, limit: int) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise InvalidField(field, f"must be a non-empty list of [{', '.join(['n'] * width)}] entries")
    if len(value) > limit:
        raise InvalidField(field, f"at most {limit} entries are allowed, got {len(value)}")
    rows = []
    for row in value:
        if not isinstance(row, list) or len(row) != width:
            raise InvalidField(field, f"each entry must be a list of {width} numbers")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise InvalidField(field, "entries must be numbers")
        if not all(math.isfinite(v) for v in row):
            raise InvalidField(field, "entries must be finite numbers (no NaN or infinity)")
        rows.append([float(v) for v in row])
    return np.array(rows, dtype=np.float32)


def embedding_dtype(req: ParsedRequest) -> str:
    """``embedding_dtype`` of the request: float16 (default) or float32."""
    value = req.get("embedding_dtype", "float16")
    if value not in EMBEDDING_DTYPES:
        raise InvalidField("embedding_dtype", f"must be one of {list(EMBEDDING_DTYPES)}")
    return value


def parse_segment(req: ParsedRequest) -> SegmentPrompts:
    """Prompts of a segment request, checked for shape and type (image bounds: :func:`check_in_image`)."""
    text = req.get("text")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise InvalidField("text", "must be a non-empty noun phrase")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidField("text", f"at most {MAX_TEXT_CHARS} characters")
        text = text.strip()
    points = labels = boxes = None
    if req.get("points") is not None:
        points = _numbers(req.get("points"), "points", 2, MAX_POINTS)
        raw_labels = req.get("point_labels")
        if not isinstance(raw_labels, list) or len(raw_labels) != len(points):
            raise InvalidField("point_labels", "required with points: one 1 (object) or 0 (background) per point")
        if not all(v in (0, 1) and not isinstance(v, bool) for v in raw_labels):
            raise InvalidField("point_labels", "each label must be 1 (object) or 0 (background)")
        labels = np.array(raw_labels, dtype=np.int32)
    elif req.get("point_labels") is not None:
        raise InvalidField("point_labels", "given without points")
    if req.get("boxes") is not None:
        boxes = _numbers(req.get("boxes"), "boxes", 4, MAX_BOXES)
        if not ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all():
            raise InvalidField("boxes", "each box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
    box_labels = req.get("box_labels")
    if box_labels is None:
        box_labels = [True] * (0 if boxes is None else len(boxes))
    elif boxes is None or not isinstance(box_labels, list) or len(box_labels) != len(boxes):
        raise InvalidField("box_labels", "one true (positive) or false (negative) per box")
    elif not all(isinstance(v, bool) for v in box_labels):
        raise InvalidField("box_labels", "each label must be true or false")
    if text is None and points is None and boxes is None:
        raise InvalidField("text", "a prompt is required: text, points (with point_labels) or boxes")
    if text is not None and points is not None:
        raise InvalidField("points", "points cannot be combined with text; give exemplar boxes instead")
    if text is None and req.get("box_labels") is not None:
        raise InvalidField("box_labels", "box labels apply to exemplar boxes of a text prompt")
    if text is None and points is not None and boxes is not None and len(boxes) > 1:
        raise InvalidField("points", "points can be combined with a single box only")
    threshold = req.get("score_threshold", 0.5)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise InvalidField("score_threshold", "must be a number between 0 and 1")
    return SegmentPrompts(
        text=text,
        points=points,
        point_labels=labels,
        boxes=boxes,
        box_labels=list(box_labels),
        multimask=flag(req, "multimask", False),
        score_threshold=float(threshold),
        return_png_masks=flag(req, "return_png_masks", False),
    )


def check_in_image(prompts: SegmentPrompts, height: int, width: int) -> None:
    """400 naming ``points`` or ``boxes`` when a coordinate lies outside the image."""
    for name, arr in (("points", prompts.points), ("boxes", prompts.boxes)):
        if arr is None:
            continue
        xs, ys = arr[:, 0::2], arr[:, 1::2]
        if (xs < 0).any() or (ys < 0).any() or (xs > width).any() or (ys > height).any():
            raise InvalidField(
                name, f"coordinates must lie inside the {width}x{height} image (x <= width, y <= height)"
            )
