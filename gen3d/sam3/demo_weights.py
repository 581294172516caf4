"""Random SAM 3 weights for the demo archive, tests and benchmarks (never for production archives)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from gen3d.files import sources_digest
from gen3d.sam3.architecture import build_sam3_model
from gen3d.sam3.presets import Sam3Preset

log = logging.getLogger(__name__)

DEMO_SOURCES = ("architecture.py", "compat.py", "presets.py", "demo_weights.py")  # what the random weights depend on


def random_sam3_state_dict(preset: Sam3Preset, bpe_path: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for a demo or test checkpoint, with every tensor filled (no NaN outputs).

    ``TextTransformer.positional_embedding`` and ``text_projection`` are ``torch.empty`` until a checkpoint
    fills them, so they get small normal values here.
    """
    torch.manual_seed(seed)
    model = build_sam3_model(preset, bpe_path)
    text = model.backbone.language_backbone.encoder
    nn.init.normal_(text.positional_embedding, std=0.01)
    if isinstance(text.text_projection, nn.Parameter):
        nn.init.normal_(text.text_projection, std=text.width**-0.5)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def demo_checkpoint(work: Path, preset: Sam3Preset, bpe_path: str, seed: int = 0) -> Path:
    """A random-weight checkpoint (safetensors) of ``preset`` in ``work``, made once per preset, seed and version of
    the code that builds the model (:data:`DEMO_SOURCES`): a file made before a change to the architecture or the
    presets would not match the model any more."""
    from safetensors.torch import save_file

    code = sources_digest(Path(__file__).parent / name for name in DEMO_SOURCES)
    path = work / f"sam3-{preset.name}-demo-{code[:12]}-seed{seed}.safetensors"
    if not path.exists():
        log.info("making demo checkpoint %s (random weights)", path)
        save_file(random_sam3_state_dict(preset, bpe_path, seed=seed), str(path))
    return path
