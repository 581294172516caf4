"""Loading SAM 3D Body: the preset and the three staged files an archive names (checkpoint, model_config.yaml,
assets/mhr_model.pt; a missing one stops start-up naming it, nothing is downloaded), the checks that keep the
random-weight demo and the production model apart, and the estimator with what identifies it."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from gen3d.checks import require_handler_keys
from gen3d.errors import StartupError
from gen3d.files import file_sha256
from gen3d.sam3d_body import compat
from gen3d.sam3d_body.demo import DEMO_FORMAT, register_tiny_backbone
from gen3d.sam3d_body.presets import BodyPreset, get_preset

log = logging.getLogger(__name__)
# handler keys of the staged files, in the order they are checked
STAGED = {"checkpoint": "the SAM 3D Body checkpoint", "model_config": "model_config.yaml", "mhr_model": "MHR"}


@dataclass(frozen=True)
class LoadedBody:
    """A ready estimator (upstream's ``SAM3DBodyEstimator``), its device, and what identifies it."""

    estimator: object
    preset: BodyPreset
    device: torch.device
    digest: str
    keypoint_names: tuple[str, ...]

    @property
    def model_id(self) -> str:
        """``sam3d_body/<preset>/<first 16 hex of the staged files' digest>``."""
        return f"sam3d_body/{self.preset.name}/{self.digest[:16]}"

    def describe(self) -> dict:
        return {
            "model_id": self.model_id,
            "preset": self.preset.name,
            "demo": self.preset.demo,
            "device": str(self.device),
            "description": self.preset.description,
        }


def staged_files(model_dir: Path, config: dict) -> dict[str, Path]:
    """The staged files the handler section names, each present (else one line naming it and its key)."""
    require_handler_keys(config, ("preset", *STAGED), model_dir)
    paths = {}
    for key, what in STAGED.items():
        path = model_dir / str(config[key])
        if not path.is_file():
            raise StartupError(f"{what} not found at {path} (handler.{key}); stage it: nothing is downloaded")
        paths[key] = path
    return paths


def read_checkpoint(path: Path, preset: BodyPreset, demo_flag: bool) -> dict:
    """The checkpoint's state dict, refusing every demo/production mix-up. Upstream's checkpoint is a Lightning
    file with pickled hyper-parameters, so it is read with ``weights_only=False``: it is the operator's staged
    file, never a client's."""
    if preset.demo and not demo_flag:
        raise StartupError(f"preset {preset.name} is a random-weight demo; refusing without handler.demo_weights: true")
    if not preset.demo and demo_flag:
        raise StartupError(f"preset {preset.name} is the production model; refusing handler.demo_weights: true")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file stops start-up with its name
        raise StartupError(f"{path} is not a readable torch checkpoint: {err}") from err
    if not isinstance(checkpoint, dict):
        raise StartupError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    is_demo = (checkpoint.get("gen3d") or {}).get("format") == DEMO_FORMAT
    if preset.demo != is_demo:
        raise StartupError(
            f"{path} is {'a demo' if is_demo else 'not a demo'} checkpoint; preset {preset.name} refuses it"
        )
    return checkpoint.get("state_dict", checkpoint)


def build_config(path: Path, mhr_model: Path, preset: BodyPreset):
    """model_config.yaml (upstream's yacs reader) with MHR's path set, checked against the preset's backbones."""
    from sam_3d_body.utils.config import get_config

    try:
        cfg = get_config(str(path))
        backbone = cfg.MODEL.BACKBONE.TYPE
    except Exception as err:  # noqa: BLE001 - a malformed config stops start-up with its name
        raise StartupError(f"{path} is not a SAM 3D Body model_config.yaml: {err}") from err
    if backbone not in preset.backbones:
        raise StartupError(f"{path} names backbone {backbone}; preset {preset.name} runs {list(preset.backbones)}")
    cfg.defrost()
    cfg.MODEL.MHR_HEAD.MHR_MODEL_PATH = str(mhr_model)
    cfg.freeze()
    return cfg


def check_loaded_keys(missing_keys: list[str], unexpected_keys: list[str], checkpoint: Path, preset: str) -> None:
    """A checkpoint that leaves any of the model's weights unset stops start-up (the model would answer with random
    weights: a checkpoint of the other variant, or a truncated file); MHR's own tensors come from mhr_model.pt, not
    from it. Extra keys (training-only parts) are logged."""
    missing = [key for key in missing_keys if ".mhr." not in key]
    if missing:
        raise StartupError(
            f"{checkpoint} does not fit preset {preset}: {len(missing)} of the model's weights are not in it, "
            f"e.g. {missing[:3]} (a checkpoint of the other variant?)"
        )
    if unexpected_keys:
        log.warning("checkpoint keys the model does not use: %d, e.g. %s", len(unexpected_keys), unexpected_keys[:10])


def load_body(model_dir: str | Path, config: dict, device: torch.device) -> LoadedBody:
    """Loads the model an archive describes (``config`` is model-config.yaml's ``handler`` section); the demo runs
    on the CPU."""
    model_dir = Path(model_dir)
    preset = get_preset(config.get("preset"))
    paths = staged_files(model_dir, config)
    state = read_checkpoint(paths["checkpoint"], preset, config.get("demo_weights") is True)
    compat.import_sam_3d_body(vendored=preset.demo)
    if preset.demo:
        register_tiny_backbone()
        device = torch.device("cpu")
    if preset.staged_code:
        compat.local_dinov3(model_dir / preset.staged_code)
    from sam_3d_body import SAM3DBodyEstimator
    from sam_3d_body.metadata.mhr70 import mhr_names
    from sam_3d_body.models.meta_arch import SAM3DBody

    cfg = build_config(paths["model_config"], paths["mhr_model"], preset)
    model = SAM3DBody(cfg)
    result = model.load_state_dict(state, strict=False)  # strict=False as upstream: MHR's tensors are not in it
    check_loaded_keys(result.missing_keys, result.unexpected_keys, paths["checkpoint"], preset.name)
    model = model.to(device).eval()
    estimator = SAM3DBodyEstimator(model, cfg)
    digest = hashlib.sha256("".join(file_sha256(paths[key]) for key in STAGED).encode()).hexdigest()
    loaded = LoadedBody(estimator, preset, device, digest, tuple(mhr_names[:70]))
    log.info("loaded %s", loaded.describe())
    return loaded
