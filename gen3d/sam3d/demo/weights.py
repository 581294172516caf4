"""Random weights of the demo preset, made so that the random model yields non-empty outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from gen3d.files import sources_digest
from gen3d.sam3d.demo import compat
from gen3d.sam3d.demo.models import SS_OCCUPANCY, build_tiny_models
from gen3d.sam3d.presets import DEMO_CHECKPOINT_FORMAT, Sam3dPreset

log = logging.getLogger(__name__)


@torch.no_grad()
def random_tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random demo weights (``<component>.<parameter>``), seeded, made so the random model yields non-empty
    outputs through the official code:
    - the sparse-structure decoder's output bias is shifted so that ``ss > 0`` (the pipeline's own occupancy
      test) holds for about ``SS_OCCUPANCY`` of a probe's grid, not half of it;
    - tensors the decoders zero-initialise (output layers, the subdivide blocks' last convolutions) are
      re-drawn: zeros would give a constant SDF (no surface) and identical Gaussians.
    """
    compat.apply()
    torch.manual_seed(seed)
    models = build_tiny_models()
    ss_decoder = models["ss_decoder"].eval()
    probe = ss_decoder(torch.randn(1, 8, 16, 16, 16, generator=torch.Generator().manual_seed(seed + 1)))
    ss_decoder.out_layer[-1].bias -= torch.quantile(probe.flatten(), 1 - SS_OCCUPANCY)
    redraw = torch.Generator().manual_seed(seed + 2)
    for name in ("slat_decoder_gs", "slat_decoder_mesh"):
        for pname, param in models[name].named_parameters():
            if param.dim() >= 1 and "norm" not in pname and not param.any():
                param.copy_(torch.randn(param.shape, generator=redraw) * 0.3)
    return {
        f"{name}.{key}": value.detach().clone().contiguous()
        for name, model in models.items()
        for key, value in model.state_dict().items()
    }


def demo_checkpoint_bytes(preset: Sam3dPreset, seed: int = 0) -> bytes:
    """The demo checkpoint file: safetensors with metadata naming its format, preset and seed."""
    from safetensors.torch import save

    meta = {"format": DEMO_CHECKPOINT_FORMAT, "preset": preset.name, "demo": "true", "seed": str(seed)}
    return save(random_tiny_state_dict(seed), metadata=meta)


def demo_checkpoint(work: Path, preset: Sam3dPreset, seed: int = 0) -> Path:
    """The demo checkpoint of ``preset`` in ``work``, made once per seed and version of the demo code
    (gen3d/sam3d/demo/)."""
    code = sources_digest(sorted(Path(__file__).parent.rglob("*.py")))
    path = work / f"sam3d-{preset.name}-{code[:12]}-seed{seed}.safetensors"
    if not path.exists():
        log.info("making demo checkpoint %s (random weights)", path)
        path.write_bytes(demo_checkpoint_bytes(preset, seed))
    return path
