"""The request envelope every model shares: what a client may send and how it is checked.

A request body is one of
- JSON (``Content-Type: application/json``) with ``task`` and an image given by ``image_s3_key`` + ``bucket`` or
  by ``image_base64``;
- raw image bytes (``image/png``, ``image/jpeg``, ``image/webp``, ..., or ``application/octet-stream``): the
  model's default task.
Any other Content-Type is refused (415) before the body is read: the types a web page may send to another origin
without asking it first (``text/plain``, forms) never run a task (:func:`body_kind`).
The envelope is the pydantic model :class:`Envelope`; each task extends it (``gen3d.sam3.request``,
``gen3d.sam3d.request``), and ``gen3d-schema`` publishes their JSON Schema. Every failed check becomes an
:class:`InvalidField` naming the offending field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gen3d.errors import InvalidField, UnsupportedMediaType
from gen3d.serving import limits
from gen3d.serving.storage import S3Location, check_bucket, check_id, check_key

BINARY_TYPES = ("application/octet-stream", "application/x-safetensors")
JSON_TYPE = "application/json"
REQUEST_ID_HEADERS = ("x-request-id", "x-amzn-sagemaker-inference-id")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(headers: dict[str, str]) -> str:
    """The client's request id (``X-Request-Id``, or SageMaker's ``X-Amzn-SageMaker-Inference-Id``) when it is
    a plain token of at most 128 characters, else a new one."""
    lowered = {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}
    for name in REQUEST_ID_HEADERS:
        value = lowered.get(name, "").strip()
        if REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


@dataclass
class RawRequest:
    """One request as TorchServe hands it over: body plus the headers we use."""

    body: Any
    content_type: str = ""
    accept: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class ImageSource:
    """Where the request's image comes from: exactly one of ``s3`` and ``inline``."""

    field: str
    s3: S3Location | None = None
    inline: bytes | None = None


@dataclass
class ParsedRequest:
    """A checked envelope; the whole body stays in ``fields`` for the task's own model."""

    task: str
    image: ImageSource | None
    fields: dict[str, Any] = field(default_factory=dict)
    binary_response: bool = False

    @property
    def came_by_s3(self) -> bool:
        """True when the image was given by S3 key: outputs then go to S3 too."""
        return self.image is not None and self.image.s3 is not None

    @property
    def writes_s3(self) -> bool:
        """A generating task's outputs go to S3 when the image came from S3 or an ``output_bucket`` is given."""
        return self.came_by_s3 or self.get("output_bucket") is not None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


SafeId = Annotated[str, Field(description="1-128 of letters, digits, '.', '_', '-'; names an output folder")]
BucketName = Annotated[str, Field(description="an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")]
S3Key = Annotated[str, Field(description="an S3 object key, at most 1024 bytes, not starting with '/'")]


class Envelope(BaseModel):
    """Fields every task shares: the task, the image (S3 or inline), the ids naming the output prefix."""

    model_config = ConfigDict(strict=True, extra="allow")

    task: str = Field(min_length=1, description="the task: get_embedding, segment (model sam3) or generate_3d (sam3d)")
    image_s3_key: S3Key | None = Field(None, description="the image in S3 (with bucket); outputs then go to S3")
    bucket: BucketName | None = Field(None, description="bucket of image_s3_key (and mask_s3_key)")
    image_base64: str | None = Field(None, description="the image inline, base64 (a data: URL prefix is accepted)")
    user_id: SafeId | None = Field(None, description="required when outputs go to S3")
    session_id: SafeId | None = Field(None, description="required when outputs go to S3")
    output_bucket: BucketName | None = Field(None, description="write outputs here instead of bucket")

    @field_validator("user_id", "session_id")
    @classmethod
    def _safe_id(cls, value: str | None, info) -> str | None:
        return value if value is None else check_id(value, info.field_name)

    @field_validator("bucket", "output_bucket")
    @classmethod
    def _bucket(cls, value: str | None, info) -> str | None:
        return value if value is None else check_bucket(value, info.field_name)

    @field_validator("image_s3_key")
    @classmethod
    def _key(cls, value: str | None, info) -> str | None:
        return value if value is None else check_key(value, info.field_name)


TYPE_WORDS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "float_type": "must be a number",
    "finite_number": "must be a finite number (no NaN or infinity)",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "missing": "required",
}


PYDANTIC_WORDS = (("Input should be ", "must be "), ("String should ", "must "), ("List should ", "must "))


def invalid_field(err: ValidationError) -> InvalidField:
    """The first problem pydantic found, as a 400 naming the top-level field (positions inside it in words)."""
    first = err.errors(include_url=False)[0]
    loc = first.get("loc") or ("body",)
    inside = " ".join(f"entry {part}" if isinstance(part, int) else str(part) for part in loc[1:])
    message = TYPE_WORDS.get(first["type"]) or first["msg"].removeprefix("Value error, ")
    for pydantic_words, ours in PYDANTIC_WORDS:
        if message.startswith(pydantic_words):
            message = ours + message.removeprefix(pydantic_words)
    if first["type"] == "literal_error":
        message = f"must be one of {first['ctx']['expected']}"
    return InvalidField(str(loc[0]), f"{inside}: {message}" if inside else message)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], body: dict) -> M:
    """``body`` as ``model``; pydantic's errors become an :class:`InvalidField`."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise invalid_field(err) from None


def _json_depth(value: Any) -> int:
    """How deep a parsed JSON value nests (a scalar is 1), level by level: no recursion, so a body nested
    hundreds deep (TorchServe parses ``application/json`` bodies itself) cannot exhaust the stack."""
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [child for item in level if isinstance(item, dict) for child in item.values()] + [
            child for item in level if isinstance(item, list) for child in item
        ]
    return depth


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header: lowercased, without parameters (``""`` when there is none)."""
    return content_type.split(";", 1)[0].strip().lower()


def body_kind(raw: RawRequest) -> Literal["json", "image"]:
    """What the request's Content-Type says its body is; 415 naming the header for any other type. A web page can
    POST ``text/plain`` or a form to a server on 127.0.0.1 without a CORS preflight, but not these types."""
    media = media_type(raw.content_type)
    if media == JSON_TYPE:
        return "json"
    if media.startswith("image/") or media == "application/octet-stream":
        return "image"
    raise UnsupportedMediaType(
        "Content-Type",
        f"{media or 'a missing Content-Type'} is not accepted: send JSON as {JSON_TYPE}, an image as image/* or "
        "application/octet-stream",
    )


def _body_as_json(raw: RawRequest) -> dict | None:
    if body_kind(raw) == "image":
        return None
    body = raw.body
    if isinstance(body, dict):
        parsed = body
    elif isinstance(body, (bytes, bytearray)):
        if not bytes(body).lstrip().startswith(b"{"):
            raise InvalidField("body", "Content-Type is application/json but the body is not a JSON object")
        try:
            parsed = json.loads(bytes(body).decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InvalidField("body", "JSON body is not UTF-8") from err
        except json.JSONDecodeError as err:
            raise InvalidField("body", f"invalid JSON: {err.msg} at position {err.pos}") from err
        except ValueError as err:  # Python's int() refuses integers longer than sys.get_int_max_str_digits()
            digits = sys.get_int_max_str_digits()
            raise InvalidField("body", f"invalid JSON: a number has more than {digits} digits") from err
        except RecursionError as err:
            raise InvalidField("body", f"JSON nested deeper than {limits.MAX_JSON_DEPTH} levels") from err
    elif isinstance(body, str):
        return _body_as_json(RawRequest(body.encode(), raw.content_type, raw.accept, raw.request_id))
    else:
        raise InvalidField("body", "empty or unsupported body")
    if not isinstance(parsed, dict):
        raise InvalidField("body", "JSON body must be an object")
    if _json_depth(parsed) > limits.MAX_JSON_DEPTH:
        raise InvalidField("body", f"JSON nested deeper than {limits.MAX_JSON_DEPTH} levels")
    return parsed


def decode_base64(value: str, name: str) -> bytes:
    if not value:
        raise InvalidField(name, "must be a non-empty base64 string")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidField(name, "is not valid base64") from err


def image_source(envelope: Envelope) -> ImageSource | None:
    """The image named by ``image_s3_key`` (+ ``bucket``) or ``image_base64``; ``None`` when neither is given."""
    if envelope.image_s3_key is not None and envelope.image_base64 is not None:
        raise InvalidField("image_s3_key", "give either image_s3_key or image_base64, not both")
    if envelope.image_s3_key is not None:
        if envelope.bucket is None:
            raise InvalidField("bucket", "required with image_s3_key")
        return ImageSource(field="image_s3_key", s3=S3Location(envelope.bucket, envelope.image_s3_key))
    if envelope.image_base64 is not None:
        return ImageSource(field="image_base64", inline=decode_base64(envelope.image_base64, "image_base64"))
    return None


def parse_request(raw: RawRequest, default_task: str) -> ParsedRequest:
    """Checks the envelope common to every task: task name, image source, ids. A raw image body asks for
    ``default_task``; which tasks a model serves is checked by its service, their fields by the task's model."""
    binary = any(t in raw.accept for t in BINARY_TYPES)
    body = _body_as_json(raw)
    if body is None:
        if not isinstance(raw.body, (bytes, bytearray)):
            raise InvalidField("body", "an image body must be the file's bytes")
        data = bytes(raw.body)
        if not data:
            raise InvalidField("body", "empty body")
        return ParsedRequest(task=default_task, image=ImageSource(field="body", inline=data), binary_response=binary)
    if not isinstance(body.get("task"), str) or not body.get("task"):
        raise InvalidField("task", "required: the name of the task, e.g. get_embedding")
    envelope = validated(Envelope, body)
    return ParsedRequest(task=envelope.task, image=image_source(envelope), fields=body, binary_response=binary)


def require_image(req: ParsedRequest) -> ImageSource:
    """The request's image, or 400 saying how to give one."""
    if req.image is None:
        raise InvalidField("image_s3_key", "an image is required: image_s3_key with bucket, or image_base64")
    return req.image
