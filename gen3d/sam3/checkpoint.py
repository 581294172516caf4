"""Reading SAM 3 checkpoints: file formats, the published key layout, strict assignment to a model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from gen3d.checks import check_keys
from gen3d.errors import StartupError

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def prefetch(path: str | Path) -> None:
    """Asks the kernel to read the whole file into the page cache in the background (``POSIX_FADV_WILLNEED``): it
    reads while the model is built on the meta device, a CPU-bound step, so the weights are in memory when they
    are first used. A no-op where the call does not exist or the file is missing (the loader then says so)."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: ``.safetensors``, or ``.pt/.pth/.ckpt`` read with ``weights_only=True``.

    Nested ``{"model": ...}`` / ``{"state_dict": ...}`` dicts are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise StartupError(f"SAM 3 checkpoint not found at {path} (looked for one of {', '.join(CHECKPOINT_SUFFIXES)})")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise StartupError(f"unsupported checkpoint type {path.name}; expected one of {', '.join(CHECKPOINT_SUFFIXES)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for key in ("model", "state_dict"):
        while isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StartupError(f"{path} does not hold a state_dict of tensors")
    return state


def to_model_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps the published ``sam3.pt`` layout (``detector.*``, ``tracker.*``) onto ``Sam3Image`` keys.

    A state_dict already in model layout is returned unchanged.
    """
    if not any(k.startswith(("detector.", "tracker.")) for k in state):
        return state
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("detector."):
            mapped[key.removeprefix("detector.")] = value
        elif key.startswith("tracker."):
            mapped["inst_interactive_predictor.model." + key.removeprefix("tracker.")] = value
        else:
            mapped[key] = value  # reported as unexpected by load_sam3_weights
    return mapped


def to_float32(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Floating tensors as float32: ``load_state_dict(assign=True)`` keeps a checkpoint's dtypes (the stock loader
    copies into float32 parameters), and the model is built to hold float32 weights; converted ones are logged."""
    converted = {k: v.float() for k, v in state.items() if v.is_floating_point() and v.dtype != torch.float32}
    if converted:
        dtypes = sorted({str(state[k].dtype).removeprefix("torch.") for k in converted})
        log.warning("checkpoint %s: %d tensors converted from %s to float32", source, len(converted), ", ".join(dtypes))
    return {**state, **converted}


def load_sam3_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Assigns ``state`` to ``model``; any missing or unexpected key is an error that lists them."""
    state = to_float32(to_model_layout(state), source)
    check_keys(model.state_dict(), state, f"checkpoint {source} does not match the SAM 3 model")
    model.load_state_dict(state, strict=True, assign=True)
