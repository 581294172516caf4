"""SAM 3D Objects presets and loading: which model an archive names, and the checks that keep the random-weight
demo and the production model apart.

Two presets, never chosen by a fallback (the archive's model-config.yaml names one in ``handler.preset``):
- ``sam3d-objects``: the official ``InferencePipelinePointMap`` from the archive's ``pipeline.yaml`` and
  checkpoints, on the worker's GPU (:mod:`gen3d.sam3d_pipeline`). It refuses demo weights.
- ``tiny-cpu-demo``: the same ``sam3d_objects`` classes at tiny size with random weights, on the CPU
  (:mod:`gen3d.sam3d_tiny`). It runs only when the archive says ``handler.demo_weights: true``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gen3d.errors import StartupError

log = logging.getLogger(__name__)

DECODE_FORMATS = ("gaussian", "mesh")
DEMO_CHECKPOINT_FORMAT = "gen3d.sam3d.tiny-cpu-demo/v1"


@dataclass(frozen=True)
class Sam3dPreset:
    """One way of running SAM 3D Objects: what it is, what it needs and which options it can honour."""

    name: str
    demo: bool
    description: str
    min_gpu_memory_gib: int
    default_steps: tuple[int, int]  # (sparse structure, structured latent), as the pipeline configures them
    cuda_postprocess: bool  # mesh postprocess, texture baking and layout post-optimisation (CUDA rendering)


PRESETS: dict[str, Sam3dPreset] = {
    "sam3d-objects": Sam3dPreset(
        name="sam3d-objects",
        demo=False,
        description="official SAM 3D Objects pipeline (pipeline.yaml + checkpoints, DINOv2 and MoGe staged)",
        min_gpu_memory_gib=32,
        default_steps=(25, 25),
        cuda_postprocess=True,
    ),
    "tiny-cpu-demo": Sam3dPreset(
        name="tiny-cpu-demo",
        demo=True,
        description=(
            "DEMO: sam3d_objects' own classes at tiny size with random weights on the CPU; outputs are valid "
            "files but mean nothing. Sparse structure 32^3 and mesh grid 128 (production 64^3 and 256); a fixed "
            "pinhole plane pointmap stands in for MoGe; a tiny random ViT stands in for DINOv2"
        ),
        min_gpu_memory_gib=0,
        default_steps=(2, 2),
        cuda_postprocess=False,
    ),
}


def get_preset(name: object) -> Sam3dPreset:
    """The preset called ``name``; a clear error listing the known ones otherwise."""
    if not isinstance(name, str) or name not in PRESETS:
        raise StartupError(f"unknown SAM 3D preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class GenerateOptions:
    """What one generate_3d request asks for (already checked against the preset)."""

    seed: int
    ss_steps: int | None
    slat_steps: int | None
    decode_formats: tuple[str, ...]
    mesh_postprocess: bool
    texture_baking: bool
    layout_postprocess: bool


@dataclass
class Generation:
    """One object: Gaussian splat (``save_ply``), GLB mesh (trimesh) and pose in the PyTorch3D camera frame."""

    gaussian: Any | None
    glb: Any | None
    rotation: list[float]  # quaternion w, x, y, z
    translation: list[float]
    scale: list[float]
    stages_ms: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


class Generator(Protocol):
    """What a preset's runner offers the service."""

    preset: Sam3dPreset
    device: torch.device

    def generate(self, image: np.ndarray, mask: np.ndarray, options: GenerateOptions) -> Generation: ...


def merge_mask_to_rgba(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HxWx4 uint8: the RGB image with the bool mask as alpha (0/255), as notebook/inference.py merges them."""
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    return np.concatenate([image[..., :3], mask.astype(np.uint8)[..., None] * 255], axis=-1)


class StageRecorder:
    """Wall time (ms) and, on CUDA, peak allocated GPU memory (MiB) of named pipeline stages.

    :meth:`wrap` replaces an object's method by a timed one, so the official ``run`` is measured without
    being re-composed; :meth:`reset` starts a new request.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.timings_ms: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}

    def reset(self) -> None:
        self.timings_ms, self.peak_mib = {}, {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize(self.device)
                peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                self.peak_mib[name] = round(max(self.peak_mib.get(name, 0.0), peak), 1)
            elapsed = (time.perf_counter() - started) * 1000
            self.timings_ms[name] = round(self.timings_ms.get(name, 0.0) + elapsed, 1)

    def wrap(self, obj: object, attribute: str, name: str) -> None:
        """Times every call of ``obj.attribute`` as stage ``name`` (calls add up)."""
        original: Callable = getattr(obj, attribute)

        def timed(*args, **kwargs):
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(obj, attribute, timed)


@dataclass(frozen=True)
class LoadedSam3d:
    """A ready generator and what identifies it."""

    generator: Generator
    preset: Sam3dPreset
    digest: str

    @property
    def model_id(self) -> str:
        """``sam3d/<preset>/<first 16 hex of the weights' digest>``."""
        return f"sam3d/{self.preset.name}/{self.digest[:16]}"

    def describe(self) -> dict:
        return {
            "model_id": self.model_id,
            "preset": self.preset.name,
            "demo": self.preset.demo,
            "device": str(self.generator.device),
            "description": self.preset.description,
        }


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def demo_checkpoint_metadata(path: Path) -> dict[str, str] | None:
    """The gen3d metadata of a demo checkpoint (safetensors header), or ``None`` for any other file."""
    if path.suffix != ".safetensors":
        return None
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if header_len <= 0 or header_len > 100_000_000:
            return None
        meta = json.loads(f.read(header_len)).get("__metadata__") or {}
    return meta if meta.get("format") == DEMO_CHECKPOINT_FORMAT else None


def check_archive_config(model_dir: Path, config: dict) -> tuple[Sam3dPreset, Path]:
    """The preset and checkpoint an archive's ``handler`` section names, refusing every demo/production mix-up."""
    for key in ("preset", "checkpoint"):
        if not config.get(key):
            raise StartupError(f"model-config.yaml in {model_dir} lacks handler.{key}")
    preset = get_preset(config["preset"])
    checkpoint = model_dir / str(config["checkpoint"])
    demo_flag = config.get("demo_weights") is True
    if preset.demo and not demo_flag:
        raise StartupError(
            f"preset {preset.name} is a random-weight demo; refusing to run without handler.demo_weights: true"
        )
    if not preset.demo and demo_flag:
        raise StartupError(f"preset {preset.name} is the production model; refusing handler.demo_weights: true")
    if not checkpoint.is_file():
        raise StartupError(f"checkpoint not found at {checkpoint} (named by handler.checkpoint)")
    meta = demo_checkpoint_metadata(checkpoint)
    if not preset.demo and meta is not None:
        raise StartupError(f"{checkpoint} is a {meta.get('preset')} demo checkpoint; preset {preset.name} refuses it")
    if preset.demo and (meta is None or meta.get("preset") != preset.name):
        raise StartupError(f"{checkpoint} is not a {preset.name} checkpoint (no {DEMO_CHECKPOINT_FORMAT} metadata)")
    return preset, checkpoint


def load_sam3d(model_dir: str | Path, config: dict, device: torch.device) -> LoadedSam3d:
    """Loads the model an archive describes (``config`` is model-config.yaml's ``handler`` section)."""
    model_dir = Path(model_dir)
    preset, checkpoint = check_archive_config(model_dir, config)
    if preset.demo:
        from gen3d.sam3d_tiny import load_tiny_demo

        generator = load_tiny_demo(preset, checkpoint)
        digest = file_sha256(checkpoint)
    else:
        from gen3d.sam3d_pipeline import load_official_pipeline

        generator, digest = load_official_pipeline(preset, model_dir, checkpoint, config, device)
    loaded = LoadedSam3d(generator=generator, preset=preset, digest=digest)
    log.info("loaded %s", loaded.describe())
    return loaded
