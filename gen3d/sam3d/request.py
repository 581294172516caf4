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
from typing import Annotated, Literal

import numpy as np
from PIL import ImageOps
from pydantic import Field, field_validator, model_validator

from gen3d.errors import InvalidField
from gen3d.sam3d.types import DECODE_FORMATS, OPTION_RENDERERS, GenerateOptions
from gen3d.serving.images import opened
from gen3d.serving.limits import MAX_POLYGON_POINTS, MAX_SEED, MAX_STEPS, SCENE_OBJECTS_CAP
from gen3d.serving.masks import MASK_FIELDS, MaskEntry, MaskFields, box_of, check_mask_size, mask_entries, mask_of_field
from gen3d.serving.schema import Envelope, ParsedRequest, validated
from gen3d.serving.storage import S3Location

DEFAULT_SEED = 42  # upstream's demo.py seed
LAYOUT_UNAVAILABLE = (
    "not available: sam-3d-objects at the pinned commit wires no layout post-optimisation "
    "(layout_post_optimization_method is None; upstream issues #63, #97, #117)"
)
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]


class SceneMask(MaskEntry):
    """One entry of ``masks``: an object of the scene."""


class Generate3dRequest(MaskFields, Envelope):
    """generate_3d: one object of a picture, given by a mask, as a Gaussian splat (PLY), a mesh (GLB) and a pose;
    or several objects (``masks``) placed in one scene."""

    task: Literal["generate_3d"]
    masks: list[SceneMask] | None = Field(
        None,
        min_length=1,
        max_length=SCENE_OBJECTS_CAP,
        description="several objects, each {mask_s3_key | mask_rle | mask_polygon}: one scene (instead of mask_*)",
    )
    object_files: bool = Field(
        True, description="with masks: false leaves out each object's files (the scene's only: half the bytes)"
    )
    seed: int = Field(DEFAULT_SEED, ge=0, le=MAX_SEED, description="same inputs + seed + preset: same PLY bytes")
    ss_steps: Steps | None = Field(None, description="stage-1 flow steps (default: the pipeline's)")
    slat_steps: Steps | None = Field(None, description="stage-2 flow steps (default: the pipeline's)")
    decode_formats: list[Literal["gaussian", "mesh"]] = Field(
        list(DECODE_FORMATS), min_length=1, description="gaussian (PLY) and/or mesh (GLB; needs gaussian)"
    )
    mesh_postprocess: bool = Field(False, description="simplify and fill holes (needs nvdiffrast)")
    texture_baking: bool = Field(False, description="bake a texture (needs nvdiffrast and diff_gaussian_rasterization)")
    layout_postprocess: bool = Field(False, description="only false: not wired at the pinned upstream commit")

    @field_validator("masks", mode="before")
    @classmethod
    def _masks_named_by_index(cls, value: object) -> object:
        return mask_entries(value, SCENE_OBJECTS_CAP, SceneMask)

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
        given = self.given()
        if len(given) > 1:
            raise InvalidField(given[1], f"give exactly one of {list(MASK_FIELDS)}, not {given}")
        if not self.object_files and self.masks is None:
            raise InvalidField("object_files", "false only applies to masks (a scene), whose files are the scene's")
        if given and self.masks is not None:
            raise InvalidField("masks", f"give masks (several objects) or {given[0]} (one object), not both")
        if self.polygon_points() > MAX_POLYGON_POINTS:
            raise InvalidField("mask_polygon", f"at most {MAX_POLYGON_POINTS} points in all")
        if sum(entry.polygon_points() for entry in self.masks or []) > MAX_POLYGON_POINTS:
            raise InvalidField("masks", f"at most {MAX_POLYGON_POINTS} polygon points in all masks together")
        return self


@dataclass(frozen=True)
class MaskSource:
    """Where the request's mask comes from: exactly one of S3, RLE, polygon or the image's alpha channel."""

    field: str
    s3: S3Location | None = None
    value: object = None
    name: str = ""  # what errors name (``masks[i]`` for a scene's mask); the field by default

    @property
    def label(self) -> str:
        return self.name or self.field


def generate_request(req: ParsedRequest) -> Generate3dRequest:
    """The request's generate_3d model (a raw image body has only defaults: its mask is its alpha channel)."""
    return validated(Generate3dRequest, req.fields or {"task": req.task})


def mask_source(req: ParsedRequest, model: Generate3dRequest) -> MaskSource:
    """The request's single mask source; 400 naming the field when there is none."""
    if req.image is not None and req.image.field == "body":
        return MaskSource(field="body")
    source = _source_of(model, model.bucket, "")
    if source is None:
        raise InvalidField(
            "mask_s3_key", "a mask is required: mask_s3_key (PNG, with bucket), mask_rle, mask_polygon or masks"
        )
    return source


def scene_mask_sources(model: Generate3dRequest) -> list[MaskSource]:
    """The sources of ``masks``, each named ``masks[i]`` in errors."""
    return [_source_of(entry, model.bucket, f"masks[{i}]") for i, entry in enumerate(model.masks or [])]


def _source_of(fields: MaskFields, bucket: str | None, name: str) -> MaskSource | None:
    if fields.mask_s3_key is not None:
        if bucket is None:
            raise InvalidField("bucket", f"required with {name + '.' if name else ''}mask_s3_key")
        return MaskSource(field="mask_s3_key", s3=S3Location(bucket, fields.mask_s3_key), name=name)
    if fields.mask_rle is not None:
        return MaskSource(field="mask_rle", value=fields.mask_rle.model_dump(), name=name)
    if fields.mask_polygon is not None:
        return MaskSource(field="mask_polygon", value=fields.mask_polygon, name=name)
    return None


def decode_mask(source: MaskSource, data: bytes | None, size: tuple[int, int]) -> np.ndarray:
    """A bool mask of ``size`` (h, w) from ``source`` (``data``: the PNG bytes of an S3 or body mask). Each kind
    is checked against ``size`` before it is decoded or drawn: a client's numbers never size an allocation."""
    label = source.label
    if source.field == "body":
        mask = alpha_mask(data or b"")
        check_mask_size(label, mask.shape, size)
        if not mask.any():
            raise InvalidField(label, "mask is empty: it must select the object (at least one pixel)")
    else:
        mask = mask_of_field(source.field, source.value, data, size, label)
    x0, y0, x1, y1 = box_of(mask)
    if x1 - x0 < 2 or y1 - y0 < 2:  # upstream's preprocessing raises BoundingBoxError (a 500) on these
        raise InvalidField(label, f"mask's bounding box is {x1 - x0:.0f}x{y1 - y0:.0f} pixels: it must be at least 2x2")
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
