"""generate_3d requests: :class:`Generate3dRequest` (the shared envelope plus the object mask and the generation
options, a pydantic model whose JSON Schema ``gen3d-schema`` publishes) and decoding the mask.

A mask is given by exactly one of ``mask_s3_key`` (a PNG in the request's ``bucket``: non-zero pixels, or
the alpha channel when it has one), ``mask_rle`` (COCO RLE ``{"size": [h, w], "counts": ...}``) or
``mask_polygon`` (``[[x, y], ...]`` in pixels, or a list of such polygons). A raw image body carries the
mask in its alpha channel (an RGBA PNG), as the upstream demo images do. Every mask becomes a bool HxW
array of the image's size; an empty one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from PIL import ImageOps
from pydantic import Field, field_validator, model_validator

from gen3d.errors import InvalidField
from gen3d.sam3d.types import DECODE_FORMATS, OPTION_RENDERERS, GenerateOptions
from gen3d.serving.images import opened
from gen3d.serving.limits import MAX_POLYGON_POINTS, MAX_SEED, MAX_STEPS
from gen3d.serving.masks import CocoRle, check_mask_size, mask_from_png, mask_from_polygon, mask_from_rle, polygons_of
from gen3d.serving.schema import Envelope, ParsedRequest, S3Key, validated
from gen3d.serving.storage import S3Location, check_key

MASK_FIELDS = ("mask_s3_key", "mask_rle", "mask_polygon")
DEFAULT_SEED = 42  # upstream's demo.py seed
LAYOUT_UNAVAILABLE = (
    "not available: sam-3d-objects at the pinned commit wires no layout post-optimisation "
    "(layout_post_optimization_method is None; upstream issues #63, #97, #117)"
)
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]


class Generate3dRequest(Envelope):
    """generate_3d: one object of a picture, given by a mask, as a Gaussian splat (PLY), a mesh (GLB) and a pose."""

    task: Literal["generate_3d"]
    mask_s3_key: S3Key | None = Field(None, description="the mask as a PNG in bucket (non-zero or alpha = object)")
    mask_rle: CocoRle | None = Field(None, description="the mask as COCO RLE (e.g. a segment result's rle)")
    mask_polygon: list[Any] | None = Field(None, description="[[x, y], ...] pixels, or a list of such polygons")
    seed: int = Field(DEFAULT_SEED, ge=0, le=MAX_SEED, description="same inputs + seed + preset: same PLY bytes")
    ss_steps: Steps | None = Field(None, description="stage-1 flow steps (default: the pipeline's)")
    slat_steps: Steps | None = Field(None, description="stage-2 flow steps (default: the pipeline's)")
    decode_formats: list[Literal["gaussian", "mesh"]] = Field(
        list(DECODE_FORMATS), min_length=1, description="gaussian (PLY) and/or mesh (GLB; needs gaussian)"
    )
    mesh_postprocess: bool = Field(False, description="simplify and fill holes (needs nvdiffrast)")
    texture_baking: bool = Field(False, description="bake a texture (needs nvdiffrast and diff_gaussian_rasterization)")
    layout_postprocess: bool = Field(False, description="only false: not wired at the pinned upstream commit")

    @field_validator("mask_s3_key")
    @classmethod
    def _mask_key(cls, value: str | None) -> str | None:
        return value if value is None else check_key(value, "mask_s3_key")

    @model_validator(mode="after")
    def _options_fit_together(self) -> Generate3dRequest:
        formats = self.decode_formats
        if len(set(formats)) != len(formats):
            raise InvalidField("decode_formats", f"must be distinct values from {list(DECODE_FORMATS)}")
        if "mesh" in formats and "gaussian" not in formats:
            raise InvalidField("decode_formats", "'mesh' needs 'gaussian' too: the official GLB export reads both")
        if self.layout_postprocess:
            raise InvalidField("layout_postprocess", LAYOUT_UNAVAILABLE)
        for name in OPTION_RENDERERS:
            if getattr(self, name) and "mesh" not in formats:
                raise InvalidField(name, "needs the mesh: add 'mesh' to decode_formats")
        given = [name for name in MASK_FIELDS if getattr(self, name) is not None]
        if len(given) > 1:
            raise InvalidField(given[1], f"give exactly one of {list(MASK_FIELDS)}, not {given}")
        polygons = polygons_of(self.mask_polygon) if self.mask_polygon is not None else []
        if sum(len(p) if isinstance(p, list) else 1 for p in polygons) > MAX_POLYGON_POINTS:
            raise InvalidField("mask_polygon", f"at most {MAX_POLYGON_POINTS} points in all")
        return self


@dataclass(frozen=True)
class MaskSource:
    """Where the request's mask comes from: exactly one of S3, RLE, polygon or the image's alpha channel."""

    field: str
    s3: S3Location | None = None
    value: object = None


def generate_request(req: ParsedRequest) -> Generate3dRequest:
    """The request's generate_3d model (a raw image body has only defaults: its mask is its alpha channel)."""
    return validated(Generate3dRequest, req.fields or {"task": req.task})


def mask_source(req: ParsedRequest, model: Generate3dRequest) -> MaskSource:
    """The request's single mask source; 400 naming the field when there is none."""
    if req.image is not None and req.image.field == "body":
        return MaskSource(field="body")
    if model.mask_s3_key is not None:
        if model.bucket is None:
            raise InvalidField("bucket", "required with mask_s3_key")
        return MaskSource(field="mask_s3_key", s3=S3Location(model.bucket, model.mask_s3_key))
    if model.mask_rle is not None:
        return MaskSource(field="mask_rle", value=model.mask_rle.model_dump())
    if model.mask_polygon is not None:
        return MaskSource(field="mask_polygon", value=model.mask_polygon)
    raise InvalidField("mask_s3_key", "a mask is required: mask_s3_key (PNG, with bucket), mask_rle or mask_polygon")


def decode_mask(source: MaskSource, data: bytes | None, size: tuple[int, int]) -> np.ndarray:
    """A bool mask of ``size`` (h, w) from ``source`` (``data``: the PNG bytes of an S3 or body mask). Each kind
    is checked against ``size`` before it is decoded or drawn: a client's numbers never size an allocation."""
    if source.field == "body":
        mask = alpha_mask(data or b"")
    elif source.field == "mask_s3_key":
        mask = mask_from_png(data or b"", size, source.field)
    elif source.field == "mask_rle":
        mask = mask_from_rle(source.value, size, source.field)
    else:
        mask = mask_from_polygon(source.value, size, source.field)
    check_mask_size(source.field, mask.shape, size)
    if not mask.any():
        raise InvalidField(source.field, "mask is empty: it must select the object (at least one pixel)")
    return mask.astype(bool)


def alpha_mask(data: bytes) -> np.ndarray:
    """The alpha channel of a raw RGBA image body as a bool mask (alpha > 0 is the object)."""
    with opened(data, "body") as img:
        img.load()
        if "A" not in img.getbands() and not (img.mode == "P" and "transparency" in img.info):
            raise InvalidField(
                "body",
                "a raw image body must carry the object mask in its alpha channel (RGBA PNG); "
                "or send JSON with image and mask_s3_key, mask_rle or mask_polygon",
            )
        upright = ImageOps.exif_transpose(img)  # as decode_image turns the picture
        return np.array(upright.convert("RGBA").getchannel("A")) > 0


def generate_options(model: Generate3dRequest, renderers: frozenset[str]) -> GenerateOptions:
    """The request's options, checked against the renderers this worker can import (``Generator.renderers``)."""
    for name, modules in OPTION_RENDERERS.items():
        missing = [module for module in modules if module not in renderers]
        if getattr(model, name) and missing:
            raise InvalidField(
                name,
                f"not available on this server: it needs {' and '.join(missing)} (CUDA renderers under "
                "non-commercial licences, not installed in the image; upstream issues #12, #29, #105)",
            )
    return GenerateOptions(
        seed=model.seed,
        ss_steps=model.ss_steps,
        slat_steps=model.slat_steps,
        decode_formats=tuple(f for f in DECODE_FORMATS if f in model.decode_formats),
        mesh_postprocess=model.mesh_postprocess,
        texture_baking=model.texture_baking,
    )
