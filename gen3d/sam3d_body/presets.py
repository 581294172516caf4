"""SAM 3D Body presets, never chosen by a fallback (the archive's model-config.yaml names one):
- ``sam3d-body-vith`` (default): the ViT-H checkpoint (facebook/sam-3d-body-vith): no torch.hub code, and none of
  DINOv3's separate licence.
- ``sam3d-body-dinov3``: the DINOv3 ViT-H+ checkpoint (facebook/sam-3d-body-dinov3); its backbone code is DINOv3's
  hub repository, staged beside the checkpoint (``dinov3/hubconf.py``).
- ``tiny-cpu-demo``: upstream's classes at tiny size with random weights, on the CPU (:mod:`gen3d.sam3d_body.demo`).
  It runs only when the archive says ``handler.demo_weights: true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gen3d.checks import preset_named
from gen3d.models import SAM3D_BODY
from gen3d.sam3d_body.demo import TINY_BACKBONE


@dataclass(frozen=True)
class BodyPreset:
    """One way of running SAM 3D Body: what it is and which backbones its model_config.yaml may name."""

    name: str
    demo: bool
    description: str
    min_gpu_memory_gib: int
    backbones: tuple[str, ...]  # MODEL.BACKBONE.TYPE values of the staged model_config.yaml
    staged_code: str | None = None  # a folder the preset needs beside the checkpoint


PRESETS: dict[str, BodyPreset] = {
    "sam3d-body-vith": BodyPreset(
        name="sam3d-body-vith",
        demo=False,
        description="SAM 3D Body, ViT-H backbone (checkpoint, model_config.yaml and assets/mhr_model.pt staged)",
        min_gpu_memory_gib=SAM3D_BODY.gpu_memory_gib,
        backbones=("vit_hmr", "vit_hmr_512_384", "vit_l", "vit_b"),
    ),
    "sam3d-body-dinov3": BodyPreset(
        name="sam3d-body-dinov3",
        demo=False,
        description="SAM 3D Body, DINOv3 backbone (DINOv3 licence; its hub code staged as dinov3/)",
        min_gpu_memory_gib=SAM3D_BODY.gpu_memory_gib,
        backbones=(
            "dinov3_vit7b",
            "dinov3_vith16plus",
            "dinov3_vits16",
            "dinov3_vits16plus",
            "dinov3_vitb16",
            "dinov3_vitl16",
        ),
        staged_code="dinov3",
    ),
    "tiny-cpu-demo": BodyPreset(
        name="tiny-cpu-demo",
        demo=True,
        description=(
            "DEMO: sam_3d_body's own SAM3DBody at tiny size with random weights on the CPU (a 2-layer ViT, a "
            "TorchScript stand-in for MHR with its 18,439 vertices and 36,874 faces); outputs mean nothing"
        ),
        min_gpu_memory_gib=0,
        backbones=(TINY_BACKBONE,),
    ),
}
DEFAULT_PRESET = "sam3d-body-vith"


def get_preset(name: object) -> BodyPreset:
    """The preset called ``name``; a clear error listing the known ones otherwise."""
    return preset_named(PRESETS, name, "SAM 3D Body")
