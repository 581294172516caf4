"""Turning results into what clients receive: safetensors embeddings and JSON envelopes."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save

from gen3d.errors import RequestError

EMBEDDING_FORMAT = "gen3d.sam3.interactive-embedding/v1"
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def embedding_safetensors(tensors: dict[str, torch.Tensor], dtype: str, metadata: dict[str, object]) -> bytes:
    """A safetensors file of ``tensors`` cast to ``dtype``; ``metadata`` values are stored as JSON strings."""
    cast = {name: t.detach().to("cpu", DTYPES[dtype]).contiguous() for name, t in tensors.items()}
    meta = {"format": EMBEDDING_FORMAT, "dtype": dtype}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    return save(cast, metadata=meta)


def success(task: str, **fields: object) -> dict:
    """The success envelope: ``status``, ``task``, then the task's fields."""
    return {"status": "success", "task": task, **fields}


def failure(task: str | None, err: RequestError) -> dict:
    """The error envelope: ``status``, ``task`` (when known), ``error`` {code, field, message}."""
    return {"status": "error", "task": task, "error": err.to_dict()}


def size_mb(data: bytes) -> float:
    """Size in MB (10^6 bytes), 3 decimals."""
    return round(len(data) / 1e6, 3)
