"""What a service hands back per request, and the answer to an unexpected failure (the sam3d worker uses
these without importing the sam3 service, whose embedding cache needs packages the sam3d image lacks)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gen3d import output_encoding as out
from gen3d.errors import RequestError

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """One answer: HTTP status, body (JSON-able dict or bytes) and content type."""

    status: int
    body: dict | bytes
    content_type: str = "application/json"


def server_error(task: str | None, stage: str, err: Exception) -> Reply:
    """A 502 (storage) or 500 answer for an unexpected failure of one request, logged with its traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    log.error("%s stage of a %s request failed", stage, task, exc_info=err)
    status = 502 if isinstance(err, (BotoCoreError, ClientError)) else 500
    rerr = RequestError(stage, f"{err.__class__.__name__}: {err}", status=status)
    return Reply(status, out.failure(task, rerr))
