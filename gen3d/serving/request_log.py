"""Every log line gen3d writes while it works on a request names the request's id (``[request <id>]``), so an
answer's ``request_id`` finds its log lines, tracebacks included."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CURRENT = ContextVar("gen3d_request_ids", default="")
_installed = False


@contextmanager
def in_request(*request_ids: str) -> Iterator[None]:
    """Log lines written inside (in this thread or task) carry these request ids."""
    token = CURRENT.set(",".join(request_ids))
    try:
        yield
    finally:
        CURRENT.reset(token)


def install() -> None:
    """Prefixes gen3d's log records with the current request ids; idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    factory = logging.getLogRecordFactory()

    def record(*args, **kwargs) -> logging.LogRecord:
        made = factory(*args, **kwargs)
        ids = CURRENT.get()
        if ids and made.name.startswith("gen3d"):
            made.msg = f"[request {ids}] {made.msg}"
        return made

    logging.setLogRecordFactory(record)
