"""torch.hub entry point of the demo preset's tiny DINOv2-shaped ViT, loaded by sam3d_objects' own ``Dino``
wrapper with ``source="local"`` (the production model loads facebookresearch/dinov2 the same way, from a
copy staged in the model directory). Weights come from the demo checkpoint, never from the network."""

import torch
from timm.models.vision_transformer import VisionTransformer

dependencies = ["torch", "timm"]


class TinyDinoV2(torch.nn.Module):
    """A ViT with DINOv2's interface: patch 14, a class token and 4 register tokens, ``forward_features``
    returning the ``x_norm_clstoken`` / ``x_norm_patchtokens`` / ``x_prenorm`` dict."""

    def __init__(self, embed_dim: int = 32, depth: int = 1, num_heads: int = 2, img_size: int = 28, reg: int = 4):
        super().__init__()
        self.vit = VisionTransformer(
            img_size=img_size,
            patch_size=14,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            reg_tokens=reg,
            num_classes=0,
            class_token=True,
        )
        self.embed_dim = embed_dim
        self.patch_embed = self.vit.patch_embed
        self.num_register_tokens = reg

    def forward_features(self, x: torch.Tensor) -> dict:
        vit = self.vit
        x = vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(x))))
        normed = vit.norm(x)
        first_patch = 1 + self.num_register_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_regtokens": normed[:, 1:first_patch],
            "x_norm_patchtokens": normed[:, first_patch:],
            "x_prenorm": x,
        }


def tiny_dinov2(**kwargs) -> TinyDinoV2:
    """The demo's DINOv2 stand-in (random weights until the demo checkpoint is loaded)."""
    return TinyDinoV2(**kwargs)
