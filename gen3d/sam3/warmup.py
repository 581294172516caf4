"""Start-up warm-up: one click through the interactive decoder on the worker's device, so that a worker whose
mask post-processing cannot run stops at start-up instead of serving masks that differ from the tested ones.

sam3's ``SAM3InteractiveImagePredictor`` fills small holes in every mask (``max_hole_area``) with connected
components: a Triton kernel on CUDA (compiling a C helper at its first launch) or scikit-image on the CPU. When
that fails, sam3 only warns "Skipping the post-processing step" and carries on with unfilled masks.
"""

from __future__ import annotations

import logging
import shutil
import sysconfig
import time
import warnings
from pathlib import Path

import torch

from gen3d.errors import StartupError
from gen3d.sam3.features import ImageFeatures
from gen3d.sam3.loading import LoadedSam3
from gen3d.sam3.prompting import segment_interactive
from gen3d.sam3.request import SegmentPrompts

log = logging.getLogger(__name__)

SKIP_MARKER = "Skipping the post-processing step"


def what_post_processing_needs(device: torch.device) -> str:
    """What hole filling needs on ``device``, and whether this machine has it."""
    if device.type == "cuda":
        compiler = shutil.which("cc") or shutil.which("gcc") or "none on PATH"
        headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
        return (
            f"on CUDA its Triton kernel compiles a C helper at first launch and needs a C compiler (found: {compiler})"
            f" and the Python headers ({headers}: {'found' if headers.is_file() else 'missing'})"
        )
    found = "installed" if _importable("skimage") else "not installed"
    return f"on the CPU it needs scikit-image ({found})"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def warm_up(loaded: LoadedSam3) -> float:
    """Runs one click on random features; returns its milliseconds, or stops start-up when sam3 would skip the
    mask post-processing."""
    preset = loaded.preset
    generator = torch.Generator().manual_seed(0)
    shapes = preset.interactive_shapes
    features = ImageFeatures(
        original_size=(preset.resolution, preset.resolution),
        interactive={name: torch.randn(shape, generator=generator).to(loaded.device) for name, shape in shapes.items()},
        backbone_fpn=[],
    )
    middle = preset.resolution / 2
    prompts = SegmentPrompts.one_click(middle, middle, score_threshold=0.5)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segment_interactive(loaded, features, prompts)
    elapsed = (time.perf_counter() - started) * 1000
    skipped = [w for w in caught if SKIP_MARKER in str(w.message)]
    if skipped:
        cause = str(skipped[0].message).strip().split("\n", 1)[0]
        raise StartupError(
            f"SAM 3's mask post-processing (hole filling) cannot run on {loaded.device} ({cause}); "
            f"{what_post_processing_needs(loaded.device)}"
        )
    log.info("warm-up click with mask post-processing on %s: %.0f ms", loaded.device, elapsed)
    return elapsed
