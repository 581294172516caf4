"""Loading SAM 3 for serving: preset + checkpoint -> a model on the worker's device, and what identifies it."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from gen3d.errors import StartupError
from gen3d.files import file_sha256
from gen3d.sam3 import compat
from gen3d.sam3.architecture import build_sam3_model_for_checkpoint
from gen3d.sam3.checkpoint import load_sam3_weights, prefetch, read_state_dict
from gen3d.sam3.presets import Sam3Preset, get_preset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedSam3:
    """A ready model and what identifies it."""

    model: nn.Module
    preset: Sam3Preset
    device: torch.device
    checkpoint_sha256: str

    @property
    def model_id(self) -> str:
        """``sam3/<preset>/<first 16 hex of the checkpoint digest>``: what embeddings and caches are keyed by."""
        return f"sam3/{self.preset.name}/{self.checkpoint_sha256[:16]}"

    @property
    def compute_dtype(self) -> torch.dtype:
        """What the model computes in: bfloat16 autocast on CUDA (as sam3's own image/video paths run), float32
        on the CPU. Weights stay float32 either way."""
        return torch.bfloat16 if self.device.type == "cuda" else torch.float32

    @cached_property
    def processor(self):
        """sam3's ``Sam3Processor`` for this model, made once: it keeps no state between calls (its ``find_stage``
        is the constant one-image, one-text one), so every encoder batch and concept prompt shares it."""
        return sam3_processor(self)

    def precision(self) -> AbstractContextManager:
        """The autocast every inference entry point runs under (a no-op on the CPU)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def describe(self) -> dict:
        """Preset and checkpoint facts for logs and responses."""
        return {
            "model_id": self.model_id,
            "preset": asdict(self.preset),
            "device": str(self.device),
            "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
        }


def sam3_processor(loaded: LoadedSam3, confidence_threshold: float = 0.5):
    """A new sam3 ``Sam3Processor`` for ``loaded``, with resolution and device passed (its defaults are
    1008/"cuda"); the service shares :attr:`LoadedSam3.processor`."""
    from sam3.model.sam3_image_processor import Sam3Processor

    return Sam3Processor(
        loaded.model,
        resolution=loaded.preset.resolution,
        device=str(loaded.device),
        confidence_threshold=confidence_threshold,
    )


def checkpoint_digest(checkpoint: Path, recorded_sha256: str | None = None, recorded_bytes: int | None = None) -> str:
    """The checkpoint's SHA-256. An archive records it when it is built (hashed while copied): then the file's size
    is checked and the file is not read a second time (hashing 3.45 GB takes 2-10 s of CPU). Without a record,
    or with ``GEN3D_VERIFY_CHECKPOINT=1``, it is computed now and must equal the record."""
    size = checkpoint.stat().st_size
    if recorded_bytes is not None and size != recorded_bytes:
        raise StartupError(f"{checkpoint} has {size} bytes; the archive recorded {recorded_bytes} when it was built")
    if recorded_sha256 and os.environ.get("GEN3D_VERIFY_CHECKPOINT") != "1":
        return recorded_sha256
    digest = file_sha256(checkpoint)
    if recorded_sha256 and digest != recorded_sha256:
        raise StartupError(f"{checkpoint} has sha256 {digest}; the archive recorded {recorded_sha256}")
    return digest


def load_sam3(
    preset_name: str,
    checkpoint: str | Path,
    bpe_path: str,
    device: torch.device,
    recorded_sha256: str | None = None,
    recorded_bytes: int | None = None,
) -> LoadedSam3:
    """Builds the preset's model, assigns the checkpoint's weights and moves it to ``device``; the checkpoint is
    read once (see :func:`checkpoint_digest`)."""
    compat.apply()
    preset = get_preset(preset_name)
    prefetch(checkpoint)
    state = read_state_dict(checkpoint)
    model = build_sam3_model_for_checkpoint(preset, bpe_path)
    load_sam3_weights(model, state, str(checkpoint))
    model = model.to(device)  # in eval mode as built
    if device.type == "cuda" and torch.cuda.get_device_properties(device).major >= 8:
        # TF32 matmuls on Ampere and newer, as sam3.model_builder sets when `import sam3` runs it; set here so the
        # precision does not rest on an import side effect (float32 ops outside the bf16 autocast use it)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    digest = checkpoint_digest(Path(checkpoint), recorded_sha256, recorded_bytes)
    log.info("loaded SAM 3 preset %s from %s (sha256 %s) on %s", preset.name, checkpoint, digest[:16], device)
    return LoadedSam3(model=model, preset=preset, device=device, checkpoint_sha256=digest)
