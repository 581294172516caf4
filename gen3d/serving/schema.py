"""The request envelope every model shares: what a client may send and how it is checked.

A request body is one of
- JSON (``Content-Type: application/json``, or any body that parses as a JSON object) with ``task`` and an
  image given by ``image_s3_key`` + ``bucket`` or by ``image_base64``;
- raw image bytes (``image/png``, ``image/jpeg``, ``image/webp``, ...): the model's default task.
Every check raises :class:`InvalidField` naming the offending field; task fields are checked by each model.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from gen3d.errors import InvalidField
from gen3d.serving.storage import S3Location, check_bucket, check_id, check_key

BINARY_TYPES = ("application/octet-stream", "application/x-safetensors")


@dataclass
class RawRequest:
    """One request as TorchServe hands it over: body plus the headers we use."""

    body: Any
    content_type: str = ""
    accept: str = ""


@dataclass
class ImageSource:
    """Where the request's image comes from: exactly one of ``s3`` and ``inline``."""

    field: str
    s3: S3Location | None = None
    inline: bytes | None = None


@dataclass
class ParsedRequest:
    """A checked request; task-specific options stay in ``fields`` for the task's own parser."""

    task: str
    image: ImageSource | None
    fields: dict[str, Any] = field(default_factory=dict)
    binary_response: bool = False

    @property
    def came_by_s3(self) -> bool:
        """True when the image was given by S3 key: outputs then go to S3 too."""
        return self.image is not None and self.image.s3 is not None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def _body_as_json(raw: RawRequest) -> dict | None:
    body = raw.body
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytes, bytearray)):
        if raw.content_type.startswith("image/"):
            return None
        stripped = bytes(body).lstrip()
        if not stripped.startswith(b"{"):
            if "json" in raw.content_type:
                raise InvalidField("body", "Content-Type is JSON but the body is not a JSON object")
            return None
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidField("body", "JSON body is not UTF-8") from err
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError as err:
            raise InvalidField("body", f"invalid JSON: {err.msg} at position {err.pos}") from err
        if not isinstance(parsed, dict):
            raise InvalidField("body", "JSON body must be an object")
        return parsed
    raise InvalidField("body", "empty or unsupported body")


def _decode_base64(value: object, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidField(name, "must be a non-empty base64 string")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidField(name, "is not valid base64") from err


def image_source(body: dict, key_field: str = "image_s3_key", b64_field: str = "image_base64") -> ImageSource | None:
    """The image named by ``key_field`` (+ ``bucket``) or ``b64_field``; ``None`` when neither is given."""
    has_key, has_b64 = body.get(key_field) is not None, body.get(b64_field) is not None
    if has_key and has_b64:
        raise InvalidField(key_field, f"give either {key_field} or {b64_field}, not both")
    if has_key:
        loc = S3Location(check_bucket(body.get("bucket")), check_key(body[key_field], key_field))
        return ImageSource(field=key_field, s3=loc)
    if has_b64:
        return ImageSource(field=b64_field, inline=_decode_base64(body[b64_field], b64_field))
    return None


def parse_request(raw: RawRequest, default_task: str) -> ParsedRequest:
    """Checks the envelope common to every task: task name, image source, ids. A raw image body asks for
    ``default_task``; which tasks a model serves is checked by its service."""
    binary = any(t in raw.accept for t in BINARY_TYPES)
    body = _body_as_json(raw)
    if body is None:
        data = bytes(raw.body)
        if not data:
            raise InvalidField("body", "empty body")
        return ParsedRequest(task=default_task, image=ImageSource(field="body", inline=data), binary_response=binary)
    task = body.get("task")
    if not isinstance(task, str) or not task:
        raise InvalidField("task", "required: the name of the task, e.g. get_embedding")
    for name in ("user_id", "session_id"):
        if body.get(name) is not None:
            check_id(body[name], name)
    if body.get("output_bucket") is not None:
        check_bucket(body["output_bucket"], "output_bucket")
    return ParsedRequest(task=task, image=image_source(body), fields=body, binary_response=binary)


def require_image(req: ParsedRequest) -> ImageSource:
    """The request's image, or 400 saying how to give one."""
    if req.image is None:
        raise InvalidField("image_s3_key", "an image is required: image_s3_key with bucket, or image_base64")
    return req.image


def flag(req: ParsedRequest, name: str, default: bool) -> bool:
    """A true/false field; 400 naming it otherwise."""
    value = req.get(name, default)
    if not isinstance(value, bool):
        raise InvalidField(name, "must be true or false")
    return value


def integer(req: ParsedRequest, name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer field within ``low..high`` (``default`` when absent); 400 naming it otherwise."""
    value = req.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidField(name, f"must be an integer from {low} to {high}")
    return value
