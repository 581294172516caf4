"""The get_embedding file: the interactive decoder's inputs as safetensors, with metadata naming the model."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save

EMBEDDING_FORMAT = "gen3d.sam3.interactive-embedding/v1"
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def embedding_safetensors(tensors: dict[str, torch.Tensor], dtype: str, metadata: dict[str, object]) -> bytes:
    """A safetensors file of ``tensors`` cast to ``dtype``; ``metadata`` values are stored as JSON strings."""
    cast = {name: t.detach().to("cpu", DTYPES[dtype]).contiguous() for name, t in tensors.items()}
    meta = {"format": EMBEDDING_FORMAT, "dtype": dtype}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    return save(cast, metadata=meta)
