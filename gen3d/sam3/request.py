"""The sam3 tasks' requests: :class:`GetEmbeddingRequest` and :class:`SegmentRequest` (the shared envelope plus
their own fields, pydantic models whose JSON Schema ``gen3d-schema`` publishes).

Segment has two modes, as SAM 3 offers them:
- concept: ``text`` (all instances of a noun phrase), optionally with exemplar ``boxes`` (+ ``box_labels``);
  masks scoring above ``score_threshold`` are returned, the ``max_masks`` best of them.
- interactive (no ``text``): ``points`` with ``point_labels`` and/or ``boxes``, SAM 1-style, one object per
  box (or one for the points); ``multimask`` returns 3 candidates for a single ambiguous click.
Coordinates are pixels of the original (EXIF-rotated) image, boxes are [x0, y0, x1, y1].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, FiniteFloat, field_validator, model_validator

from gen3d.errors import InvalidField
from gen3d.serving.limits import DEFAULT_MAX_MASKS, MAX_BOXES, MAX_MASKS, MAX_POINTS, MAX_TEXT_CHARS
from gen3d.serving.schema import Envelope, ParsedRequest, validated

EMBEDDING_ID_PATTERN = r"^[0-9a-f]{32}$"
Point = Annotated[list[FiniteFloat], Field(min_length=2, max_length=2)]
Box = Annotated[list[FiniteFloat], Field(min_length=4, max_length=4)]


class Sam3Request(Envelope):
    """Fields both sam3 tasks take besides the envelope."""

    model_id: str | None = Field(None, description="optional guard: 409 when the server runs another model")


class GetEmbeddingRequest(Sam3Request):
    """get_embedding: the image's features for the interactive prompt decoder (a safetensors file)."""

    task: Literal["get_embedding"]
    embedding_dtype: Literal["float16", "float32"] = Field("float16", description="dtype of the file's tensors")


class SegmentRequest(Sam3Request):
    """segment: masks for a text concept (with exemplar boxes) or for points and boxes."""

    task: Literal["segment"]
    embedding_id: str | None = Field(
        None, pattern=EMBEDDING_ID_PATTERN, description="features of an earlier get_embedding/segment, not an image"
    )
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="concept prompt (a noun phrase)")
    points: list[Point] | None = Field(None, min_length=1, max_length=MAX_POINTS, description="[[x, y], ...] pixels")
    point_labels: list[Annotated[int, Field(ge=0, le=1)]] | None = Field(
        None, description="1 object / 0 background, one per point"
    )
    boxes: list[Box] | None = Field(None, min_length=1, max_length=MAX_BOXES, description="[[x0, y0, x1, y1], ...]")
    box_labels: list[bool] | None = Field(None, description="with text: exemplar polarity, one per box")
    multimask: bool = Field(False, description="3 ranked candidates for an ambiguous single click")
    score_threshold: float = Field(0.5, ge=0, le=1, description="concept mode: keep masks scoring above")
    return_png_masks: bool = Field(False, description="also write each mask as a PNG to S3")
    max_masks: int = Field(
        DEFAULT_MAX_MASKS,
        ge=1,
        le=MAX_MASKS,
        description="answer at most this many masks, the best scores (masks_total and truncated say what was cut)",
    )

    @field_validator("embedding_id", mode="before")
    @classmethod
    def _embedding_id(cls, value: object) -> object:
        if value is not None and (not isinstance(value, str) or not re.match(EMBEDDING_ID_PATTERN, value)):
            raise InvalidField("embedding_id", "must be the 32-hex-digit id returned by get_embedding")
        return value

    @model_validator(mode="after")
    def _prompts_fit_together(self) -> SegmentRequest:
        """The combinations SAM 3 can answer (raised as InvalidField: pydantic lets it through)."""
        if self.text is not None and not self.text.strip():
            raise InvalidField("text", "must be a non-empty noun phrase")
        if self.points is not None and (self.point_labels is None or len(self.point_labels) != len(self.points)):
            raise InvalidField("point_labels", "required with points: one 1 (object) or 0 (background) per point")
        if self.points is None and self.point_labels is not None:
            raise InvalidField("point_labels", "given without points")
        if self.boxes is not None and not all(x1 > x0 and y1 > y0 for x0, y0, x1, y1 in self.boxes):
            raise InvalidField("boxes", "each box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        if self.box_labels is not None and (self.boxes is None or len(self.box_labels) != len(self.boxes)):
            raise InvalidField("box_labels", "one true (positive) or false (negative) per box")
        if self.text is None and self.points is None and self.boxes is None:
            raise InvalidField("text", "a prompt is required: text, points (with point_labels) or boxes")
        if self.text is not None and self.points is not None:
            raise InvalidField("points", "points cannot be combined with text; give exemplar boxes instead")
        if self.text is None and self.box_labels is not None:
            raise InvalidField("box_labels", "box labels apply to exemplar boxes of a text prompt")
        if self.text is None and self.points is not None and self.boxes is not None and len(self.boxes) > 1:
            raise InvalidField("points", "points can be combined with a single box only")
        return self


@dataclass
class SegmentPrompts:
    """Checked prompts of one segment request, as arrays."""

    text: str | None
    points: np.ndarray | None  # (N, 2) float
    point_labels: np.ndarray | None  # (N,) int 0/1
    boxes: np.ndarray | None  # (M, 4) float xyxy
    box_labels: list[bool]
    multimask: bool
    score_threshold: float
    return_png_masks: bool
    max_masks: int | None = None  # the best this many masks only; None: every mask (the request always sets it)

    @property
    def concept(self) -> bool:
        return self.text is not None

    @classmethod
    def one_click(cls, x: float, y: float, score_threshold: float, multimask: bool = False) -> SegmentPrompts:
        """One foreground click at pixel (x, y): what warm-up, the GPU check and tests send."""
        return cls(
            text=None,
            points=np.array([[x, y]], dtype=np.float32),
            point_labels=np.array([1], dtype=np.int32),
            boxes=None,
            box_labels=[],
            multimask=multimask,
            score_threshold=score_threshold,
            return_png_masks=False,
        )


def embedding_request(req: ParsedRequest) -> GetEmbeddingRequest:
    return validated(GetEmbeddingRequest, req.fields)


def parse_segment(req: ParsedRequest) -> tuple[SegmentRequest, SegmentPrompts]:
    """The request's segment model and its prompts (image bounds: :func:`check_in_image`)."""
    model = validated(SegmentRequest, req.fields)
    boxes = np.array(model.boxes, dtype=np.float32) if model.boxes is not None else None
    prompts = SegmentPrompts(
        text=model.text.strip() if model.text is not None else None,
        points=np.array(model.points, dtype=np.float32) if model.points is not None else None,
        point_labels=np.array(model.point_labels, dtype=np.int32) if model.point_labels is not None else None,
        boxes=boxes,
        box_labels=list(model.box_labels) if model.box_labels is not None else [True] * len(model.boxes or []),
        multimask=model.multimask,
        score_threshold=float(model.score_threshold),
        return_png_masks=model.return_png_masks,
        max_masks=model.max_masks,
    )
    return model, prompts


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
