"""What every service shares: a request's way through a batch (:class:`Job`), what it hands back (:class:`Reply`),
and the answer to an unexpected failure. The sam3d worker uses these without importing the sam3 service, whose
embedding cache needs packages the sam3d image lacks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gen3d import output_encoding as out
from gen3d.errors import RequestError
from gen3d.request_schema import ParsedRequest, RawRequest

log = logging.getLogger(__name__)

MetricSink = Callable[[str, float, str], None]  # (name, value, unit): a custom TorchServe metric


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


def elapsed_ms(since: float) -> float:
    """Milliseconds since ``since`` (a ``time.perf_counter()`` value), one decimal."""
    return round((time.perf_counter() - since) * 1000, 1)


@dataclass
class Job:
    """One request on its way through a batch; services add their task's fields in a subclass."""

    raw: RawRequest
    started: float = field(default_factory=time.perf_counter)
    request: ParsedRequest | None = None
    timings_ms: dict[str, object] = field(default_factory=dict)
    reply: Reply | None = None

    @property
    def task(self) -> str | None:
        return self.request.task if self.request else None

    def fail(self, err: RequestError) -> None:
        self.reply = Reply(err.status, out.failure(self.task, err))
