"""Loading SAM 3D Objects: which preset an archive names, the checks that keep the random-weight demo and
the production model apart, and the loaded generator with what identifies it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from gen3d.checks import require_handler_keys
from gen3d.errors import StartupError
from gen3d.files import file_sha256, safetensors_metadata
from gen3d.sam3d.presets import DEMO_CHECKPOINT_FORMAT, Sam3dPreset, get_preset
from gen3d.sam3d.types import Generator

log = logging.getLogger(__name__)


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


def demo_checkpoint_metadata(path: Path) -> dict[str, str] | None:
    """The gen3d metadata of a demo checkpoint (safetensors header), or ``None`` for any other checkpoint; a
    ``.safetensors`` file whose header cannot be read stops start-up with its own error."""
    if path.suffix != ".safetensors":
        return None
    try:
        meta = safetensors_metadata(path)
    except (SafetensorError, OSError) as err:
        raise StartupError(f"{path} is not a readable safetensors file: {err}") from err
    return meta if meta.get("format") == DEMO_CHECKPOINT_FORMAT else None


def check_archive_config(model_dir: Path, config: dict) -> tuple[Sam3dPreset, Path]:
    """The preset and checkpoint an archive's ``handler`` section names, refusing every demo/production mix-up."""
    require_handler_keys(config, ("preset", "checkpoint"), model_dir)
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
        from gen3d.sam3d.demo.generator import load_tiny_demo

        generator = load_tiny_demo(preset, checkpoint)
        digest = file_sha256(checkpoint)
    else:
        from gen3d.sam3d.pipeline import load_official_pipeline

        generator, digest = load_official_pipeline(preset, model_dir, checkpoint, config, device)
    loaded = LoadedSam3d(generator=generator, preset=preset, digest=digest)
    log.info("loaded %s", loaded.describe())
    return loaded
