"""generate_body requests: :class:`GenerateBodyRequest` (the shared envelope plus the people and the camera) and
turning its people into pixel boxes and masks of the decoded picture.

People are given as ``boxes`` (``[[x0, y0, x1, y1], ...]`` pixels of the upright picture) and/or ``masks`` (each
an object with exactly one of ``mask_s3_key`` (a PNG in ``bucket``), ``mask_rle`` (COCO RLE) or ``mask_polygon``:
generate_3d's mask objects). Upstream conditions a mask on its box: a mask without a box gets its tight box. With
both, the lists pair up in order. The camera is ``focal_length`` (pixels, principal point at the picture's
centre) or ``cam_int`` (3x3 intrinsics); without either, upstream's default (focal length = the picture's diagonal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from gen3d.errors import InvalidField
from gen3d.serving.limits import MAX_FOCAL_PIXELS, MAX_PEOPLE, MAX_POLYGON_POINTS
from gen3d.serving.masks import MaskEntry, box_of, mask_entries, mask_of_field
from gen3d.serving.schema import Envelope, ParsedRequest, validated
from gen3d.serving.storage import S3Location

Coordinate = Annotated[float, Field(allow_inf_nan=False)]
INFERENCE_TYPES = ("full", "body")
HAND_UNAVAILABLE = (
    "'hand' is not served: upstream's estimator at the pinned commit reads the body decoder's output after a "
    "hand-only run, which it does not make (process_one_image fails); use 'full' (body, then both hands) or 'body'"
)


class PersonMask(MaskEntry):
    """One person's mask: exactly one of ``mask_s3_key``, ``mask_rle`` or ``mask_polygon`` (generate_3d's mask
    objects)."""


class GenerateBodyRequest(Envelope):
    """generate_body: the people of a picture, one per box or mask, as posed MHR meshes with keypoints."""

    task: Literal["generate_body"]
    boxes: list[list[Coordinate]] | None = Field(
        None, min_length=1, max_length=MAX_PEOPLE, description="[[x0, y0, x1, y1], ...] pixels, one per person"
    )
    masks: list[PersonMask] | None = Field(
        None, min_length=1, max_length=MAX_PEOPLE, description="one mask per person (with boxes: in the same order)"
    )
    focal_length: float | None = Field(
        None, gt=0, le=MAX_FOCAL_PIXELS, allow_inf_nan=False, description="pixels; principal point at the centre"
    )
    cam_int: list[list[Coordinate]] | None = Field(
        None, description="3x3 intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]"
    )
    inference_type: Literal["full", "body", "hand"] = Field(
        "full", description="full: body then both hands; body: the body decoder only ('hand' is refused)"
    )

    @field_validator("masks", mode="before")
    @classmethod
    def _masks_named_by_index(cls, value: object) -> object:
        return mask_entries(value, MAX_PEOPLE, PersonMask)

    @field_validator("boxes")
    @classmethod
    def _boxes(cls, boxes: list[list[float]] | None) -> list[list[float]] | None:
        for i, box in enumerate(boxes or []):
            if len(box) != 4:
                raise ValueError(f"entry {i}: a box is [x0, y0, x1, y1]")
            if not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"entry {i}: needs x0 < x1 and y0 < y1")
        return boxes

    @field_validator("cam_int")
    @classmethod
    def _cam_int(cls, k: list[list[float]] | None) -> list[list[float]] | None:
        if k is None:
            return k
        if len(k) != 3 or any(len(row) != 3 for row in k):
            raise ValueError("must be 3x3")
        if not (0 < k[0][0] <= MAX_FOCAL_PIXELS and 0 < k[1][1] <= MAX_FOCAL_PIXELS):
            raise ValueError(f"fx and fy must be in (0, {MAX_FOCAL_PIXELS:g}] pixels")
        if k[0][1] != 0 or k[1][0] != 0 or k[2] != [0, 0, 1]:
            raise ValueError("must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
        return k

    @model_validator(mode="after")
    def _fit_together(self) -> GenerateBodyRequest:
        if self.inference_type == "hand":
            raise InvalidField("inference_type", HAND_UNAVAILABLE)
        if self.boxes is not None and self.masks is not None and len(self.boxes) != len(self.masks):
            raise InvalidField("masks", f"{len(self.masks)} masks for {len(self.boxes)} boxes: they pair up in order")
        if self.focal_length is not None and self.cam_int is not None:
            raise InvalidField("cam_int", "give focal_length or cam_int, not both")
        if sum(mask.polygon_points() for mask in self.masks or []) > MAX_POLYGON_POINTS:
            raise InvalidField("masks", f"at most {MAX_POLYGON_POINTS} polygon points in all")
        return self


def body_request(req: ParsedRequest) -> GenerateBodyRequest:
    """The request's generate_body model; people are required (a raw image body has none)."""
    model = validated(GenerateBodyRequest, req.fields or {"task": req.task})
    if model.boxes is None and model.masks is None:
        raise InvalidField(
            "boxes",
            "the people are required: boxes [[x0, y0, x1, y1], ...] and/or masks (no person detector runs here; "
            "sam3's segment with text 'person' gives them)",
        )
    return model


def mask_locations(model: GenerateBodyRequest) -> list[S3Location | None]:
    """The S3 object of each mask given by ``mask_s3_key`` (``None`` for the others)."""
    if any(mask.mask_s3_key is not None for mask in model.masks or []) and model.bucket is None:
        raise InvalidField("bucket", "required with a mask's mask_s3_key")
    return [S3Location(model.bucket, m.mask_s3_key) if m.mask_s3_key else None for m in model.masks or []]


def decode_masks(model: GenerateBodyRequest, pngs: list[bytes | None], size: tuple[int, int]) -> list[np.ndarray]:
    """Bool HxW masks of the picture's ``size`` (h, w), each checked for size before it is decoded, none empty."""
    return [
        mask_of_field(mask.given()[0], mask.mask_rle.model_dump() if mask.mask_rle else mask.mask_polygon, png, size,
                      f"masks[{i}]")
        for i, (mask, png) in enumerate(zip(model.masks or [], pngs, strict=True))
    ]  # fmt: skip


@dataclass(frozen=True)
class People:
    """What upstream's estimator takes: boxes (N x 4, xyxy pixels), masks (N x H x W uint8, or None) and the
    camera intrinsics (3 x 3, or None for upstream's default)."""

    boxes: np.ndarray
    masks: np.ndarray | None
    cam_int: np.ndarray | None


def people_of(model: GenerateBodyRequest, masks: list[np.ndarray], size: tuple[int, int]) -> People:
    """The request's people in the picture of ``size`` (h, w): each box inside it; a mask's box derived from it."""
    height, width = size
    if model.boxes is not None:
        for i, (x0, y0, x1, y1) in enumerate(model.boxes):
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise InvalidField("boxes", f"entry {i} is outside the {width}x{height} (w x h) picture")
        boxes = np.asarray(model.boxes, dtype=np.float32)
    else:
        boxes = np.asarray([box_of(mask) for mask in masks], dtype=np.float32)
    stacked = np.stack(masks).astype(np.uint8) if masks else None
    return People(boxes=boxes, masks=stacked, cam_int=intrinsics(model, size))


def intrinsics(model: GenerateBodyRequest, size: tuple[int, int]) -> np.ndarray | None:
    """3x3 intrinsics from ``cam_int``, or from ``focal_length`` with the principal point at the picture's centre."""
    if model.cam_int is not None:
        return np.asarray(model.cam_int, dtype=np.float32)
    if model.focal_length is None:
        return None
    height, width = size
    f = model.focal_length
    return np.asarray([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float32)


def default_focal_length(size: tuple[int, int]) -> float:
    """Upstream's focal length when the request gives none: the picture's diagonal in pixels."""
    return math.hypot(*size)
