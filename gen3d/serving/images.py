"""Decoding client images into RGB pictures, and what identifies a picture."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageOps, UnidentifiedImageError

from gen3d.errors import InvalidField, TooLarge

MAX_IMAGE_PIXELS = 64_000_000  # ~8k x 8k; larger inputs are refused instead of exhausting memory
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def decode_image(data: bytes, field: str) -> Image.Image:
    """An RGB image from PNG/JPEG/WebP/... bytes, EXIF orientation applied; 400 naming ``field`` otherwise.

    Grayscale, palette and alpha images are converted to RGB (alpha is dropped, not composited).
    """
    if not data:
        raise InvalidField(field, "image is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA") else img.convert("RGB")
            return img
    except Image.DecompressionBombError as err:
        raise TooLarge(field, f"image too large (limit {MAX_IMAGE_PIXELS} pixels)") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InvalidField(field, f"not a readable image ({err.__class__.__name__}: {err})") from err


def image_digest(image: Image.Image) -> str:
    """SHA-256 of the decoded pixels and size: equal for the same picture in any file format."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()
