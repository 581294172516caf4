"""Object masks in and out: COCO RLE (pycocotools), polygons and PNG images, always as bool HxW arrays; and the
mask object requests give (:class:`MaskFields`: generate_3d's mask fields and ``masks`` entries, generate_body's
``masks`` entries)."""

from __future__ import annotations

import io
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gen3d.errors import InvalidField
from gen3d.serving.images import opened
from gen3d.serving.schema import S3Key, invalid_field
from gen3d.serving.storage import check_key

MASK_FIELDS = ("mask_s3_key", "mask_rle", "mask_polygon")


class CocoRle(BaseModel):
    """A COCO run-length encoding, as segment returns masks (pycocotools reads it)."""

    model_config = ConfigDict(strict=True)

    size: list[Annotated[int, Field(gt=0)]] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: str | list[Annotated[int, Field(ge=0)]] = Field(description="compressed string or uncompressed runs")


class MaskFields(BaseModel):
    """One object's mask: exactly one of the three fields (checked by the request)."""

    model_config = ConfigDict(strict=True)

    mask_s3_key: S3Key | None = Field(None, description="the mask as a PNG in bucket (non-zero or alpha = object)")
    mask_rle: CocoRle | None = Field(None, description="the mask as COCO RLE (e.g. a segment result's rle)")
    mask_polygon: list[Any] | None = Field(None, description="[[x, y], ...] pixels, or a list of such polygons")

    @field_validator("mask_s3_key")
    @classmethod
    def _mask_key(cls, value: str | None) -> str | None:
        return value if value is None else check_key(value, "mask_s3_key")

    def given(self) -> list[str]:
        return [name for name in MASK_FIELDS if getattr(self, name) is not None]

    def polygon_points(self) -> int:
        polygons = polygons_of(self.mask_polygon) if self.mask_polygon is not None else []
        return sum(len(p) if isinstance(p, list) else 1 for p in polygons)


class MaskEntry(MaskFields):
    """One entry of a request's ``masks``: exactly one of the three fields (checked by :func:`mask_entries`)."""

    model_config = ConfigDict(strict=True, extra="forbid")


def mask_entries(value: object, cap: int, entry_model: type[MaskEntry]) -> object:
    """A ``masks`` list, each entry validated alone as ``entry_model`` so that a bad one answers 400 naming
    ``masks[i]``; anything but a list of at most ``cap`` entries is returned as given (pydantic names the list)."""
    if not isinstance(value, list) or len(value) > cap:
        return value
    checked = []
    for index, item in enumerate(value):
        try:
            entry = entry_model.model_validate(item)
        except ValidationError as err:
            inner = invalid_field(err)
            raise InvalidField(f"masks[{index}]", f"{inner.field}: {inner.message}") from None
        except InvalidField as err:
            raise InvalidField(f"masks[{index}]", f"{err.field}: {err.message}") from None
        given = entry.given()
        if len(given) != 1:
            raise InvalidField(f"masks[{index}]", f"give exactly one of {list(MASK_FIELDS)}, not {given}")
        checked.append(entry)
    return checked


def rle_from_mask(mask: np.ndarray) -> dict:
    """COCO RLE of a bool HxW mask: ``{"size": [h, w], "counts": str}`` (compressed counts). pycocotools reads
    the mask column by column: a uint8 mask already in column-major order (a transposed C array) is not copied."""
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _coco(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def rle_area(rle: dict) -> int:
    """Pixels inside an RLE of :func:`rle_from_mask`, counted from its runs (the mask is not decoded)."""
    return int(coco_mask.area(_coco(rle)))


def rle_box(rle: dict) -> list[float]:
    """Tight xyxy box of an RLE of :func:`rle_from_mask`, from its runs: :func:`box_of` of the mask."""
    x, y, w, h = (float(v) for v in coco_mask.toBbox(_coco(rle)))
    return [x, y, x + w, y + h]


def check_mask_size(field: str, mask_size: tuple[int, int], size: tuple[int, int]) -> None:
    """400 naming ``field`` unless a mask of ``mask_size`` (h, w) fits the image of ``size`` (h, w)."""
    if tuple(mask_size) != tuple(size):
        raise InvalidField(field, f"mask is {mask_size[0]}x{mask_size[1]} (h x w) but the image is {size[0]}x{size[1]}")


def mask_from_rle(rle: object, size: tuple[int, int], field: str = "mask_rle") -> np.ndarray:
    """Bool HxW mask from a COCO RLE dict (compressed string or uncompressed list counts) for an image of ``size``
    (h, w). The RLE's own size is checked against ``size`` before anything is decoded: decoding allocates it."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InvalidField(field, 'must be a COCO RLE object {"size": [h, w], "counts": ...}')
    rle_size = rle["size"]
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(type(v) is int and v > 0 for v in rle_size)):
        raise InvalidField(field, "size must be [height, width] with positive integers")
    check_mask_size(field, rle_size, size)
    counts = rle["counts"]
    try:
        if isinstance(counts, list):
            if any(type(c) is not int or c < 0 for c in counts) or sum(counts) != size[0] * size[1]:
                raise InvalidField(field, "uncompressed counts must be integers >= 0 adding up to height*width")
            encoded = coco_mask.frPyObjects({"size": rle_size, "counts": counts}, size[0], size[1])
        elif isinstance(counts, str):
            encoded = {"size": rle_size, "counts": counts.encode("ascii")}
        else:
            raise InvalidField(field, "counts must be a string or a list of integers")
        return coco_mask.decode(encoded).astype(bool)
    except InvalidField:
        raise
    except Exception as err:  # pycocotools raises bare exceptions on malformed counts
        raise InvalidField(field, "cannot decode the RLE counts (not COCO RLE of this size)") from err


def polygons_of(polygon: object) -> list:
    """The polygons of a ``mask_polygon``: one polygon ``[[x, y], ...]`` or a list of such (told apart by the
    nesting of its first item)."""
    nested = isinstance(polygon, list) and polygon and isinstance(polygon[0], list) and polygon[0]
    return polygon if nested and isinstance(polygon[0][0], list) else [polygon]


def polygon_points(poly: object, size: tuple[int, int], field: str) -> list[tuple[float, float]]:
    """One polygon's points, each an [x, y] pair of numbers inside the image of ``size`` (h, w): 0 <= x <= width,
    0 <= y <= height; 400 naming ``field`` otherwise."""
    if not isinstance(poly, list) or len(poly) < 3:
        raise InvalidField(field, "each polygon needs at least 3 [x, y] points")
    height, width = size
    for point in poly:
        pair = isinstance(point, list) and len(point) == 2
        if not (pair and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise InvalidField(field, "points must be [x, y] number pairs")
        if not (0 <= point[0] <= width and 0 <= point[1] <= height):  # False for NaN too
            raise InvalidField(
                field, f"points must lie inside the {width}x{height} image (0 <= x <= width, 0 <= y <= height)"
            )
    return [(float(x), float(y)) for x, y in poly]


def mask_from_polygon(polygon: object, size: tuple[int, int], field: str = "mask_polygon") -> np.ndarray:
    """Bool HxW mask filling one or more polygons given as [[x, y], ...] (or a list of such) in pixels; every
    point is checked to lie inside the image before anything is drawn."""
    polygons = [polygon_points(poly, size, field) for poly in polygons_of(polygon)]
    img = Image.new("1", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(img)
    for points in polygons:
        draw.polygon(points, fill=1)
    return np.array(img, dtype=bool)


def mask_from_png(data: bytes, size: tuple[int, int], field: str = "mask_s3_key") -> np.ndarray:
    """Bool HxW mask from a PNG for an image of ``size`` (h, w), checked from the header before the pixels are
    decoded: any non-zero pixel (of the alpha channel when there is one) is inside."""
    with opened(data, field) as img:
        check_mask_size(field, (img.height, img.width), size)
        img.load()
        band = img.getchannel("A") if "A" in img.getbands() else img.convert("L")
        return np.array(band) > 0


def mask_of_field(field: str, value: object, png: bytes | None, size: tuple[int, int], label: str) -> np.ndarray:
    """A bool mask of ``size`` (h, w) from one mask field: ``mask_s3_key`` (``png``: the PNG fetched from S3),
    ``mask_rle`` (``value``: the RLE dict) or ``mask_polygon`` (``value``: the polygon(s)). Each kind is checked
    against ``size`` before it is decoded or drawn (a client's numbers never size an allocation); an empty mask is
    refused. Errors name ``label`` (``masks[i]`` for an entry of a list)."""
    if field == "mask_s3_key":
        mask = mask_from_png(png or b"", size, label)
    elif field == "mask_rle":
        mask = mask_from_rle(value, size, label)
    else:
        mask = mask_from_polygon(value, size, label)
    check_mask_size(label, mask.shape, size)
    if not mask.any():
        raise InvalidField(label, "mask is empty: it must select something (at least one pixel)")
    return mask.astype(bool)


def packed_rows(mask: np.ndarray) -> np.ndarray:
    """A bool HxW mask as rows of bits, most significant first, each row padded to whole bytes: 1/8 of the
    mask's bytes, and the layout of Pillow's 1-bit images."""
    return np.packbits(mask, axis=-1)


def png_of_rows(rows: np.ndarray, width: int) -> bytes:
    """A 1-bit PNG (black outside, white inside) of :func:`packed_rows` of a mask ``width`` pixels wide. zlib's
    fastest level: at 64 MP it writes a mask in a fraction of the default's time, for a file a few tenths
    larger."""
    buf = io.BytesIO()
    Image.frombytes("1", (width, rows.shape[0]), rows.tobytes()).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """A bool mask as a 1-bit PNG, read back as 0/1 (mode "1") or 0/255 (converted to "L")."""
    return png_of_rows(packed_rows(mask), mask.shape[1])


def box_of(mask: np.ndarray) -> list[float]:
    """Tight xyxy box of a mask in pixels ([0, 0, 0, 0] when empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
