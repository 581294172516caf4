"""A TorchServe handler that answers each request with its own size and no work: the serving floor (frontend,
IPC, batching) that ``gen3d-bench`` compares the real handlers against. Never part of a model archive we ship."""

import json


def handle(data, context):
    """One JSON answer per request; ``timings_ms.total`` is 0 because the handler does nothing."""
    if data is None:  # TorchServe's initialisation call
        return None
    answer = {"status": "success", "timings_ms": {"total": 0.0}}
    return [json.dumps({**answer, "echo_bytes": len(str(item))}) for item in data]
