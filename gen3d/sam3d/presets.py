"""SAM 3D Objects presets, never chosen by a fallback (the archive's model-config.yaml names one):
- ``sam3d-objects``: the official ``InferencePipelinePointMap`` from the archive's ``pipeline.yaml`` and
  checkpoints, on the worker's GPU (:mod:`gen3d.sam3d.pipeline`). It refuses demo weights.
- ``tiny-cpu-demo``: the same ``sam3d_objects`` classes at tiny size with random weights, on the CPU
  (:mod:`gen3d.sam3d.demo`). It runs only when the archive says ``handler.demo_weights: true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gen3d.checks import preset_named
from gen3d.models import SAM3D

DEMO_CHECKPOINT_FORMAT = "gen3d.sam3d.tiny-cpu-demo/v1"


@dataclass(frozen=True)
class Sam3dPreset:
    """One way of running SAM 3D Objects: what it is, what it needs and which options it can honour."""

    name: str
    demo: bool
    description: str
    min_gpu_memory_gib: int
    default_steps: tuple[int, int]  # (sparse structure, structured latent), as the pipeline configures them
    # expected seconds per object at the default steps, by device type: a many-mask request must fit its count
    # times this within the response timeout (model-config.yaml handler.object_seconds overrides it)
    object_seconds: dict[str, float]


PRESETS: dict[str, Sam3dPreset] = {
    "sam3d-objects": Sam3dPreset(
        name="sam3d-objects",
        demo=False,
        description="official SAM 3D Objects pipeline (pipeline.yaml + checkpoints, DINOv2 and MoGe staged)",
        min_gpu_memory_gib=SAM3D.gpu_memory_gib,
        default_steps=(25, 25),
        # upstream issue #64 reports 8-12 s per object on an H100; the default instance's L40S is slower
        object_seconds={"cuda": 30.0},
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
        object_seconds={"cpu": 30.0},  # ~6 s per object on an idle 2-core test machine; 5x for a busy one
    ),
}


def get_preset(name: object) -> Sam3dPreset:
    """The preset called ``name``; a clear error listing the known ones otherwise."""
    return preset_named(PRESETS, name, "SAM 3D")
