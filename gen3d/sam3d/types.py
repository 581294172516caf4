"""What a generate_3d request asks for, what a preset's generator returns, and the generator's interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from gen3d.sam3d.presets import Sam3dPreset

DECODE_FORMATS = ("gaussian", "mesh")
# What each optional postprocessing step of upstream's to_glb imports: utils3d's CUDA rasterizer (nvdiffrast) to
# fill mesh holes and to bake textures, and render_multiview's "inria" Gaussian renderer for the views it bakes.
OPTION_RENDERERS: dict[str, tuple[str, ...]] = {
    "mesh_postprocess": ("nvdiffrast",),
    "texture_baking": ("nvdiffrast", "diff_gaussian_rasterization"),
}


@dataclass(frozen=True)
class GenerateOptions:
    """What one generate_3d request asks for (already checked against the preset)."""

    seed: int
    ss_steps: int | None
    slat_steps: int | None
    decode_formats: tuple[str, ...]
    mesh_postprocess: bool
    texture_baking: bool


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
    renderers: frozenset[str]  # the optional renderers (OPTION_RENDERERS) this worker can import

    def picture_pointmap(self, image: np.ndarray) -> torch.Tensor:
        """The picture's HxWx3 pointmap (PyTorch3D camera frame), for several objects of one picture."""
        ...

    def generate(
        self, image: np.ndarray, mask: np.ndarray, options: GenerateOptions, pointmap: torch.Tensor | None = None
    ) -> Generation:
        """One object; ``pointmap`` (:meth:`picture_pointmap`) reuses the picture's instead of computing it."""
        ...


def merge_mask_to_rgba(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HxWx4 uint8: the RGB image with the bool mask as alpha (0/255), as notebook/inference.py merges them."""
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    return np.concatenate([image[..., :3], mask.astype(np.uint8)[..., None] * 255], axis=-1)


def importable_renderers() -> frozenset[str]:
    """The renderers of :data:`OPTION_RENDERERS` that this process can import."""
    import importlib.util

    names = {module for modules in OPTION_RENDERERS.values() for module in modules}
    return frozenset(name for name in names if importlib.util.find_spec(name) is not None)
