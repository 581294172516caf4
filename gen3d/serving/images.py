"""Decoding client images into RGB pictures, and what identifies a picture."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageOps, UnidentifiedImageError

from gen3d.errors import InvalidField, TooLarge
from gen3d.serving.limits import MAX_IMAGE_PIXELS

# Pillow only warns between its limit and twice it (and raises above): the project checks the exact limit itself
# from the header (opened); Pillow's own check stays as a second guard at twice the limit.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


@contextmanager
def opened(data: bytes, field: str) -> Iterator[Image.Image]:
    """The image ``data`` holds, opened (header read, pixels not decoded yet); 413 naming ``field`` when it has
    more than ``MAX_IMAGE_PIXELS`` pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise TooLarge(field, f"image has more than {MAX_IMAGE_PIXELS} pixels") from err
    with img:
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise TooLarge(field, f"image is {img.width}x{img.height}: more than {MAX_IMAGE_PIXELS} pixels")
        yield img


def decode_image(data: bytes, field: str) -> Image.Image:
    """An RGB image from PNG/JPEG/WebP/... bytes, EXIF orientation applied; 400 naming ``field`` otherwise.

    Grayscale, palette and alpha images are converted to RGB (alpha is dropped, not composited).
    """
    if not data:
        raise InvalidField(field, "image is empty")
    try:
        with opened(data, field) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA") else img.convert("RGB")
            return img
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise InvalidField(field, f"not a readable image ({err.__class__.__name__}: {err})") from err


def image_digest(image: Image.Image) -> str:
    """SHA-256 of the decoded pixels and size: equal for the same picture in any file format."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()
