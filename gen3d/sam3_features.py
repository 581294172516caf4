"""Running SAM 3's image encoder over a batch and extracting what each image's prompts need.

``encode_images`` runs the backbone once over the stacked images through sam3's own ``Sam3Processor``
(its preprocessing, its ``conv_s0``/``conv_s1`` projections), then derives, per image, the interactive
decoder's inputs exactly as ``Sam3Image.predict_inst`` does: ``image_embed`` [1,256,g,g] and
``high_res_feats`` [1,32,4g,4g], [1,64,2g,2g] (g = 72 at 1008 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from gen3d.sam3_builder import LoadedSam3

EMBEDDING_TENSORS = ("image_embed", "high_res_feats.0", "high_res_feats.1")


@dataclass
class ImageFeatures:
    """One image's encoder output: the interactive decoder's features and the full backbone output."""

    original_size: tuple[int, int]  # (height, width)
    interactive: dict[str, torch.Tensor]  # EMBEDDING_TENSORS, batch dim 1
    backbone_out: dict  # Sam3Processor's state["backbone_out"] for this image (batch dim 1)


def _slice_batch(value, index: int):
    """Item ``index`` of a batched backbone output (tensors, lists and dicts of them), batch dim kept."""
    if isinstance(value, torch.Tensor):
        return value[index : index + 1]
    if isinstance(value, list):
        return [_slice_batch(v, index) for v in value]
    if isinstance(value, tuple):
        return tuple(_slice_batch(v, index) for v in value)
    if isinstance(value, dict):
        return {k: _slice_batch(v, index) for k, v in value.items()}
    return value


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
    """One encoder pass over all ``images``; per-image features in input order."""
    state = processor(loaded).set_image_batch(list(images))
    backbone_out = state["backbone_out"]
    interactive = _interactive_features(loaded, backbone_out["sam2_backbone_out"])
    return [
        ImageFeatures(
            original_size=(img.height, img.width),
            interactive={k: v[i : i + 1] for k, v in interactive.items()},
            backbone_out=_slice_batch(backbone_out, i),
        )
        for i, img in enumerate(images)
    ]
