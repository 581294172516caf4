"""SAM 3 presets: widths, depths and resolution of the published model and of the tiny demo/test model."""

from __future__ import annotations

from dataclasses import dataclass

from gen3d.checks import preset_named
from gen3d.models import SAM3

D_MODEL = 256  # SAM 3's model width; the interactive decoder's feature shapes depend on it
PATCH_SIZE = 14


@dataclass(frozen=True)
class Sam3Preset:
    """Widths, depths and resolution of one SAM 3 image model."""

    name: str
    resolution: int
    vit_dim: int
    vit_depth: int
    vit_heads: int
    vit_mlp_ratio: float
    vit_window: int
    vit_global_blocks: tuple[int, ...]
    vit_pretrain_size: int
    text_width: int
    text_heads: int
    text_layers: int
    ffn_dim: int
    fusion_layers: int
    decoder_layers: int
    num_queries: int
    geometry_layers: int
    tracker_layers: int
    min_gpu_memory_gib: int  # what a worker's GPU needs (the archive records it; SageMaker picks instances by it)

    @property
    def grid(self) -> int:
        """Side of the image encoder's token grid (72 at 1008 px)."""
        return self.resolution // PATCH_SIZE

    @property
    def feature_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of the interactive decoder's features: high-res 4x and 2x, then the embedding."""
        g = self.grid
        return [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]

    @property
    def interactive_shapes(self) -> dict[str, tuple[int, int, int, int]]:
        """Shapes (batch 1) of the interactive decoder's inputs, by name: what get_embedding returns and a click
        reads. 32 and 64 are the channels of sam3's ``conv_s0``/``conv_s1`` projections."""
        high_res_0, high_res_1, embed = self.feature_sizes
        return {
            "image_embed": (1, D_MODEL, *embed),
            "high_res_feats.0": (1, 32, *high_res_0),
            "high_res_feats.1": (1, 64, *high_res_1),
        }


PRESETS: dict[str, Sam3Preset] = {
    # The published architecture (facebook/sam3, 860 M parameters).
    "sam3": Sam3Preset(
        name="sam3",
        resolution=1008,
        vit_dim=1024,
        vit_depth=32,
        vit_heads=16,
        vit_mlp_ratio=4.625,
        vit_window=24,
        vit_global_blocks=(7, 15, 23, 31),
        vit_pretrain_size=336,
        text_width=1024,
        text_heads=16,
        text_layers=24,
        ffn_dim=2048,
        fusion_layers=6,
        decoder_layers=6,
        num_queries=200,
        geometry_layers=3,
        tracker_layers=4,
        min_gpu_memory_gib=SAM3.gpu_memory_gib,
    ),
    # Same classes, tiny widths and depths, 112 px: random-weight demo and tests (~15 M parameters).
    "tiny": Sam3Preset(
        name="tiny",
        resolution=112,
        vit_dim=64,
        vit_depth=2,
        vit_heads=2,
        vit_mlp_ratio=2.0,
        vit_window=4,
        vit_global_blocks=(1,),
        vit_pretrain_size=56,
        text_width=64,
        text_heads=2,
        text_layers=1,
        ffn_dim=128,
        fusion_layers=1,
        decoder_layers=1,
        num_queries=16,
        geometry_layers=1,
        tracker_layers=1,
        min_gpu_memory_gib=0,
    ),
}


def get_preset(name: object) -> Sam3Preset:
    """The preset called ``name``; a clear error listing the known ones otherwise."""
    return preset_named(PRESETS, name, "SAM 3")
