"""Decoding client images into RGB pictures, and what identifies a picture."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageOps, UnidentifiedImageError

from gen3d.errors import InvalidField, TooLarge
from gen3d.serving.limits import MAX_IMAGE_PIXELS

# Pillow only warns between its limit and twice it (and raises above): the project checks the exact limit itself
# from the header (opened); Pillow's own check stays as a second guard at twice the limit.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# What Pillow raises for bytes it cannot decode: OSError (UnidentifiedImageError, truncated data), ValueError,
# SyntaxError (a PNG whose chunks are broken, raised while the pixels load), EOFError and struct.error.
PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)
# Python reprs inside Pillow's messages (`<_io.BytesIO object at 0x...>`, `b'\x89...'`): never shown to a client
PYTHON_REPR = re.compile(r"<[^<>]*>|\bb'(?:[^'\\]|\\.)*'|\bb\"(?:[^\"\\]|\\.)*\"")


def unreadable(field: str, err: Exception) -> InvalidField:
    """A 400 naming ``field`` for an image Pillow could not decode, in words without Python reprs."""
    if isinstance(err, UnidentifiedImageError):
        return InvalidField(field, "not a readable image: not a format the server reads (PNG, JPEG, WebP, ...)")
    detail = " ".join(PYTHON_REPR.sub("...", str(err)).split())
    return InvalidField(field, f"not a readable image: corrupt or truncated data ({detail or type(err).__name__})")


@contextmanager
def pillow_errors(field: str) -> Iterator[None]:
    """Pillow's errors inside the block as answers naming ``field``: 413 for too many pixels, 400 otherwise."""
    try:
        yield
    except Image.DecompressionBombError as err:
        raise TooLarge(field, f"image has more than {MAX_IMAGE_PIXELS} pixels") from err
    except PILLOW_ERRORS as err:
        raise unreadable(field, err) from err


@contextmanager
def opened(data: bytes, field: str) -> Iterator[Image.Image]:
    """The image ``data`` holds, opened (header read, pixels not decoded yet); 413 naming ``field`` when it has
    more than ``MAX_IMAGE_PIXELS`` pixels. Pillow's errors, here or while the block loads the pixels, are
    answers naming ``field`` (:func:`pillow_errors`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pillow_errors(field):
            img = Image.open(io.BytesIO(data))
    with img, pillow_errors(field):
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise TooLarge(field, f"image is {img.width}x{img.height}: more than {MAX_IMAGE_PIXELS} pixels")
        yield img


def decode_image(data: bytes, field: str) -> Image.Image:
    """An RGB image from PNG/JPEG/WebP/... bytes, EXIF orientation applied; 400 naming ``field`` otherwise.

    Grayscale, palette and alpha images are converted to RGB (alpha is dropped, not composited).
    """
    if not data:
        raise InvalidField(field, "image is empty")
    with opened(data, field) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA") else img.convert("RGB")
        return img


def image_digest(image: Image.Image) -> str:
    """SHA-256 of the decoded pixels and size: equal for the same picture in any file format."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()
