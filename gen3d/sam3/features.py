"""Running SAM 3's image encoder over a batch and keeping what each image's prompts need.

``encode_images`` runs the backbone once over the stacked images through sam3's own ``Sam3Processor``
(its preprocessing, its ``conv_s0``/``conv_s1`` projections), then derives, per image:
- the interactive decoder's inputs exactly as ``Sam3Image.predict_inst`` does: ``image_embed`` [1,256,g,g]
  and ``high_res_feats`` [1,32,4g,4g], [1,64,2g,2g] (g = 72 at 1008 px): what get_embedding returns;
- the detector's ``backbone_fpn`` levels, which text (concept) prompts need. Position encodings and
  ``vision_features`` are derived from them again (``grounding_backbone_out``), so they are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from gen3d.sam3.loading import LoadedSam3

EMBEDDING_TENSORS = ("image_embed", "high_res_feats.0", "high_res_feats.1")
FPN_PREFIX = "backbone_fpn."


@dataclass
class ImageFeatures:
    """One image's encoder output (batch dim 1) as computed: bfloat16 on CUDA, float32 on the CPU."""

    original_size: tuple[int, int]  # (height, width)
    interactive: dict[str, torch.Tensor]  # EMBEDDING_TENSORS
    backbone_fpn: list[torch.Tensor]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything as one flat name -> tensor dict (for the cache)."""
        flat = dict(self.interactive)
        flat.update({f"{FPN_PREFIX}{i}": t for i, t in enumerate(self.backbone_fpn)})
        return flat

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], original_size: tuple[int, int]) -> ImageFeatures:
        """Inverse of :meth:`tensors`."""
        levels = sorted((k for k in tensors if k.startswith(FPN_PREFIX)), key=lambda k: int(k[len(FPN_PREFIX) :]))
        return cls(
            original_size=original_size,
            interactive={k: tensors[k] for k in EMBEDDING_TENSORS},
            backbone_fpn=[tensors[k] for k in levels],
        )


def _interactive_features(loaded: LoadedSam3, sam2_backbone_out: dict) -> dict[str, torch.Tensor]:
    """Batched ``image_embed`` and ``high_res_feats`` from the SAM 2-style neck output."""
    tracker = loaded.model.inst_interactive_predictor.model
    _, vision_feats, _, _ = tracker._prepare_backbone_features(sam2_backbone_out)
    vision_feats[-1] = vision_feats[-1] + tracker.no_mem_embed
    batch = vision_feats[-1].shape[1]
    feats = [
        feat.permute(1, 2, 0).reshape(batch, -1, *size)
        for feat, size in zip(vision_feats, loaded.preset.feature_sizes, strict=True)
    ]
    return {"image_embed": feats[2], "high_res_feats.0": feats[0], "high_res_feats.1": feats[1]}


def processor(loaded: LoadedSam3, confidence_threshold: float = 0.5):
    """sam3's ``Sam3Processor`` for this model, with resolution and device passed (its defaults are 1008/"cuda")."""
    from sam3.model.sam3_image_processor import Sam3Processor

    return Sam3Processor(
        loaded.model,
        resolution=loaded.preset.resolution,
        device=str(loaded.device),
        confidence_threshold=confidence_threshold,
    )


@torch.inference_mode()
def encode_images(loaded: LoadedSam3, images: list[Image.Image]) -> list[ImageFeatures]:
    """One encoder pass over all ``images`` (under the model's autocast); per-image features in input order."""
    with loaded.precision():
        state = processor(loaded).set_image_batch(list(images))
        backbone_out = state["backbone_out"]
        interactive = _interactive_features(loaded, backbone_out["sam2_backbone_out"])
    return [
        ImageFeatures(
            original_size=(img.height, img.width),
            interactive={k: v[i : i + 1] for k, v in interactive.items()},
            backbone_fpn=[level[i : i + 1] for level in backbone_out["backbone_fpn"]],
        )
        for i, img in enumerate(images)
    ]


@torch.inference_mode()
def grounding_backbone_out(loaded: LoadedSam3, features: ImageFeatures) -> dict:
    """A fresh ``backbone_out`` for ``Sam3Processor`` text/box grounding, as ``SAM3VLBackbone`` builds it."""
    position_encoding = loaded.model.backbone.vision_backbone.position_encoding
    fpn = [t.to(loaded.device) for t in features.backbone_fpn]
    return {
        "vision_features": fpn[-1],
        "vision_pos_enc": [position_encoding(t).to(t.dtype) for t in fpn],
        "backbone_fpn": fpn,
    }
