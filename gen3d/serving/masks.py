"""Object masks in and out: COCO RLE (pycocotools), polygons and PNG images, always as bool HxW arrays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError
from pycocotools import mask as coco_mask

from gen3d.errors import InvalidField
from gen3d.serving.images import opened


def rle_from_mask(mask: np.ndarray) -> dict:
    """COCO RLE of a bool HxW mask: ``{"size": [h, w], "counts": str}`` (compressed counts)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_from_rle(rle: object, field: str = "mask_rle") -> np.ndarray:
    """Bool HxW mask from a COCO RLE dict (compressed string or uncompressed list counts)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InvalidField(field, 'must be a COCO RLE object {"size": [h, w], "counts": ...}')
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise InvalidField(field, "size must be [height, width] with positive integers")
    counts = rle["counts"]
    try:
        if isinstance(counts, list):
            if sum(counts) != size[0] * size[1]:
                raise InvalidField(field, "uncompressed counts must add up to height*width")
            encoded = coco_mask.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        elif isinstance(counts, str):
            encoded = {"size": size, "counts": counts.encode("ascii")}
        else:
            raise InvalidField(field, "counts must be a string or a list of integers")
        return coco_mask.decode(encoded).astype(bool)
    except InvalidField:
        raise
    except Exception as err:  # pycocotools raises bare exceptions on malformed counts
        raise InvalidField(field, f"cannot decode RLE ({err})") from err


def polygons_of(polygon: object) -> list:
    """The polygons of a ``mask_polygon``: one polygon ``[[x, y], ...]`` or a list of such (told apart by the
    nesting of its first item)."""
    nested = isinstance(polygon, list) and polygon and isinstance(polygon[0], list) and polygon[0]
    return polygon if nested and isinstance(polygon[0][0], list) else [polygon]


def mask_from_polygon(polygon: object, size: tuple[int, int], field: str = "mask_polygon") -> np.ndarray:
    """Bool HxW mask filling one or more polygons given as [[x, y], ...] (or a list of such) in pixels."""
    polygons = polygons_of(polygon)
    img = Image.new("1", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        if not isinstance(poly, list) or len(poly) < 3:
            raise InvalidField(field, "each polygon needs at least 3 [x, y] points")
        try:
            points = [(float(x), float(y)) for x, y in poly]
        except (TypeError, ValueError) as err:
            raise InvalidField(field, "points must be [x, y] number pairs") from err
        if not all(np.isfinite(points).all(axis=1)):
            raise InvalidField(field, "points must be finite numbers")
        draw.polygon(points, fill=1)
    return np.array(img, dtype=bool)


def mask_from_png(data: bytes, field: str = "mask_s3_key") -> np.ndarray:
    """Bool HxW mask from a PNG: any non-zero pixel (of the alpha channel when there is one) is inside."""
    try:
        with opened(data, field) as img:
            img.load()
            band = img.getchannel("A") if "A" in img.getbands() else img.convert("L")
            return np.array(band) > 0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InvalidField(field, f"not a readable mask image ({err})") from err


def mask_png(mask: np.ndarray) -> bytes:
    """A bool mask as an 8-bit PNG (0 or 255)."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, "PNG")
    return buf.getvalue()


def box_of(mask: np.ndarray) -> list[float]:
    """Tight xyxy box of a mask in pixels ([0, 0, 0, 0] when empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
