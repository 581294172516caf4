"""Typed errors, KServe's way: each class carries the HTTP status it is answered with.

A :class:`ServingError` is about one request: the service answers it with the class's ``status`` and a JSON
body naming ``field``; the other requests of the batch and the worker are unaffected. A :class:`StartupError`
stops a worker's ``initialize`` with one line naming what is missing. docs/http-api.md's error table is
:func:`error_table` (a test keeps the two equal).
"""

from __future__ import annotations

from typing import ClassVar


class ServingError(Exception):
    """An unexpected failure of one request."""

    status: ClassVar[int] = 500
    # the answer's stable `error.type` (snake_case): clients branch on it, not on the message
    error_type: ClassVar[str] = "internal"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_dict(self) -> dict:
        """The ``error`` object of the JSON answer."""
        return {"code": self.status, "type": self.error_type, "field": self.field, "message": self.message}


class InvalidField(ServingError):
    """A field is missing or invalid (`field` names it), or the task belongs to the other model."""

    status = 400
    error_type = "invalid_field"


class Forbidden(ServingError):
    """S3 refused the read or write (the bucket belongs to another account than `GEN3D_BUCKET_OWNER`'s, or the
    server's credentials may not use it), or the bucket is not on the server's allow-list (`GEN3D_ALLOWED_BUCKETS`)."""

    status = 403
    error_type = "forbidden"


class NotFound(ServingError):
    """The S3 object or bucket does not exist, or the `embedding_id` is unknown to this model."""

    status = 404
    error_type = "not_found"


class Conflict(ServingError):
    """The `model_id` guard names another model than the one served."""

    status = 409
    error_type = "conflict"


class TooLarge(ServingError):
    """The image has too many pixels, an input object is too large, or inline outputs are too large."""

    status = 413
    error_type = "payload_too_large"


class UnsupportedMediaType(ServingError):
    """The body's Content-Type does not match it: JSON needs `application/json`, an image `image/*` or
    `application/octet-stream`."""

    status = 415
    error_type = "unsupported_media_type"


class Unprocessable(ServingError):
    """The request is valid but the model cannot turn it into a result (e.g. no occupied voxel)."""

    status = 422
    error_type = "unprocessable"


class StorageError(ServingError):
    """S3 failed (unreachable, throttled, an unexpected error) while reading or writing for the request."""

    status = 502
    error_type = "storage_unavailable"


class StorageTimeout(ServingError):
    """S3 did not answer within the call's deadline (`field` names the object); the worker serves the next one."""

    status = 504
    error_type = "storage_timeout"


class OutOfResources(ServingError):
    """The device ran out of memory for this request; the worker serves the next one."""

    status = 507
    error_type = "out_of_resources"


ERROR_TYPES: tuple[type[ServingError], ...] = (
    InvalidField,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    Unprocessable,
    ServingError,
    StorageError,
    StorageTimeout,
    OutOfResources,
)


def error_table() -> str:
    """The Markdown table of answer statuses, from the classes above (docs/http-api.md carries it verbatim)."""
    rows = ["| status | `error.type` | class | when |", "| --- | --- | --- | --- |"]
    for cls in ERROR_TYPES:
        doc = " ".join((cls.__doc__ or "").split())
        rows.append(f"| {cls.status} | `{cls.error_type}` | `{cls.__name__}` | {doc} |")
    return "\n".join(rows)


class StartupError(RuntimeError):
    """The model cannot be served (missing package, checkpoint or file); stops ``initialize``."""
