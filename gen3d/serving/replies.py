"""What a request gets back: a :class:`Reply` (status, body, content type) with the JSON envelopes."""

from __future__ import annotations

from dataclasses import dataclass

from gen3d.errors import ServingError

JSON = "application/json"


@dataclass
class Reply:
    """One answer: HTTP status, body (JSON-able dict or bytes) and content type."""

    status: int
    body: dict | bytes
    content_type: str = JSON
    request_id: str = ""  # sent as the X-Request-Id header (JSON bodies also carry it)


def success(task: str, **fields: object) -> dict:
    """The success envelope: ``status``, ``task``, then the task's fields."""
    return {"status": "success", "task": task, **fields}


def failure(task: str | None, err: ServingError) -> dict:
    """The error envelope: ``status``, ``task`` (when known), ``error`` {code, field, message}."""
    return {"status": "error", "task": task, "error": err.to_dict()}


def error_reply(task: str | None, err: ServingError) -> Reply:
    """The answer to ``err``, with the status its class carries."""
    return Reply(err.status, failure(task, err))


def size_mb(data: bytes) -> float:
    """Size in MB (10^6 bytes), 3 decimals."""
    return round(len(data) / 1e6, 3)
