"""generate_3d requests: the object mask and the generation options, on top of the shared envelope
(:func:`gen3d.serving.schema.parse_request`: task, image source, ids).

A mask is given by exactly one of ``mask_s3_key`` (a PNG in the request's ``bucket``: non-zero pixels, or
the alpha channel when it has one), ``mask_rle`` (COCO RLE ``{"size": [h, w], "counts": ...}``) or
``mask_polygon`` (``[[x, y], ...]`` in pixels, or a list of such polygons). A raw image body carries the
mask in its alpha channel (an RGBA PNG), as the upstream demo images do. Every mask becomes a bool HxW
array of the image's size; an empty one is refused.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from gen3d.errors import InvalidField
from gen3d.sam3d.types import DECODE_FORMATS, OPTION_RENDERERS, GenerateOptions
from gen3d.serving.masks import mask_from_png, mask_from_polygon, mask_from_rle
from gen3d.serving.schema import ParsedRequest, flag, integer
from gen3d.serving.storage import S3Location, check_bucket, check_key

MASK_FIELDS = ("mask_s3_key", "mask_rle", "mask_polygon")
MAX_STEPS = 200
MAX_SEED = 2**63 - 1
DEFAULT_SEED = 42  # upstream's demo.py seed
LAYOUT_UNAVAILABLE = (
    "not available: sam-3d-objects at the pinned commit wires no layout post-optimisation "
    "(layout_post_optimization_method is None; upstream issues #63, #97, #117)"
)


@dataclass(frozen=True)
class MaskSource:
    """Where the request's mask comes from: exactly one of S3, RLE, polygon or the image's alpha channel."""

    field: str
    s3: S3Location | None = None
    value: object = None


def mask_source(req: ParsedRequest) -> MaskSource:
    """The request's single mask source; 400 naming the field when there is none or more than one."""
    if req.image is not None and req.image.field == "body":
        return MaskSource(field="body")
    given = [name for name in MASK_FIELDS if req.get(name) is not None]
    if not given:
        raise InvalidField(
            "mask_s3_key", "a mask is required: mask_s3_key (PNG, with bucket), mask_rle or mask_polygon"
        )
    if len(given) > 1:
        raise InvalidField(given[1], f"give exactly one of {list(MASK_FIELDS)}, not {given}")
    name = given[0]
    if name == "mask_s3_key":
        bucket = check_bucket(req.get("bucket"))
        return MaskSource(field=name, s3=S3Location(bucket, check_key(req.get(name), name)))
    return MaskSource(field=name, value=req.get(name))


def decode_mask(source: MaskSource, data: bytes | None, size: tuple[int, int]) -> np.ndarray:
    """A bool mask of ``size`` (h, w) from ``source`` (``data``: the PNG bytes of an S3 or body mask)."""
    if source.field == "body":
        mask = alpha_mask(data or b"")
    elif source.field == "mask_s3_key":
        mask = mask_from_png(data or b"", source.field)
    elif source.field == "mask_rle":
        mask = mask_from_rle(source.value, source.field)
    else:
        mask = mask_from_polygon(source.value, size, source.field)
    if mask.shape != size:
        raise InvalidField(
            source.field, f"mask is {mask.shape[0]}x{mask.shape[1]} (h x w) but the image is {size[0]}x{size[1]}"
        )
    if not mask.any():
        raise InvalidField(source.field, "mask is empty: it must select the object (at least one pixel)")
    return mask.astype(bool)


def alpha_mask(data: bytes) -> np.ndarray:
    """The alpha channel of a raw RGBA image body as a bool mask (alpha > 0 is the object)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if "A" not in img.getbands() and not (img.mode == "P" and "transparency" in img.info):
                raise InvalidField(
                    "body",
                    "a raw image body must carry the object mask in its alpha channel (RGBA PNG); "
                    "or send JSON with image and mask_s3_key, mask_rle or mask_polygon",
                )
            upright = ImageOps.exif_transpose(img)  # as decode_image turns the picture
            return np.array(upright.convert("RGBA").getchannel("A")) > 0
    except InvalidField:
        raise
    except (OSError, ValueError) as err:
        raise InvalidField("body", f"not a readable image ({err})") from err


def generate_options(req: ParsedRequest, renderers: frozenset[str]) -> GenerateOptions:
    """The request's options, checked against the renderers this worker can import (``Generator.renderers``)."""
    formats = req.get("decode_formats", list(DECODE_FORMATS))
    if (
        not isinstance(formats, list)
        or not formats
        or any(f not in DECODE_FORMATS for f in formats)
        or len(set(formats)) != len(formats)
    ):
        raise InvalidField("decode_formats", f"must be a non-empty list of distinct values from {list(DECODE_FORMATS)}")
    if "mesh" in formats and "gaussian" not in formats:
        raise InvalidField("decode_formats", "'mesh' needs 'gaussian' too: the official GLB export reads both")
    mesh = "mesh" in formats
    if flag(req, "layout_postprocess", False):
        raise InvalidField("layout_postprocess", LAYOUT_UNAVAILABLE)
    switches = {name: flag(req, name, False) for name in OPTION_RENDERERS}
    for name, on in switches.items():
        if on and not mesh:
            raise InvalidField(name, "needs the mesh: add 'mesh' to decode_formats")
        missing = [module for module in OPTION_RENDERERS[name] if module not in renderers]
        if on and missing:
            raise InvalidField(
                name,
                f"not available on this server: it needs {' and '.join(missing)} (CUDA renderers under "
                "non-commercial licences, not installed in the image; upstream issues #12, #29, #105)",
            )
    return GenerateOptions(
        seed=integer(req, "seed", DEFAULT_SEED, 0, MAX_SEED),
        ss_steps=integer(req, "ss_steps", None, 1, MAX_STEPS),
        slat_steps=integer(req, "slat_steps", None, 1, MAX_STEPS),
        decode_formats=tuple(f for f in DECODE_FORMATS if f in formats),
        **switches,
    )
