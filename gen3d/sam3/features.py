"""Running SAM 3's image encoder over a batch and keeping what each image's prompts need, in float16.

``encode_images`` runs the backbone once over the stacked images through sam3's own ``Sam3Processor``
(its preprocessing, its ``conv_s0``/``conv_s1`` projections), then derives, per image:
- the interactive decoder's inputs exactly as ``Sam3Image.predict_inst`` does: ``image_embed`` [1,256,g,g]
  and ``high_res_feats`` [1,32,4g,4g], [1,64,2g,2g] (g = 72 at 1008 px): what get_embedding returns;
- the detector's ``backbone_fpn`` levels, which text (concept) prompts need. Position encodings and
  ``vision_features`` are derived from them again (``grounding_backbone_out``), so they are not stored.
Every feature is held in float16, whether just computed, cached or sent to a client (exact for a GPU's bfloat16
features): a click gives the same mask from a fresh image, from the cache, or in a client decoding the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from gen3d.errors import ServingError
from gen3d.sam3.loading import LoadedSam3

EMBEDDING_TENSORS = ("image_embed", "high_res_feats.0", "high_res_feats.1")
FPN_PREFIX = "backbone_fpn."


FEATURE_DTYPE = torch.float16


@dataclass
class ImageFeatures:
    """One image's encoder output (batch dim 1), held in float16: the interactive decoder's inputs and/or the
    detector's FPN levels (a cache lookup returns one of the two)."""

    original_size: tuple[int, int]  # (height, width)
    interactive: dict[str, torch.Tensor] = field(default_factory=dict)  # EMBEDDING_TENSORS
    backbone_fpn: list[torch.Tensor] = field(default_factory=list)

    def fpn_tensors(self) -> dict[str, torch.Tensor]:
        """The FPN levels as a name -> tensor dict (for the cache)."""
        return {f"{FPN_PREFIX}{i}": t for i, t in enumerate(self.backbone_fpn)}

    def interactive_on(self, device: torch.device) -> ImageFeatures:
        """The ``interactive`` part alone, on ``device`` (what a worker keeps in its device cache)."""
        return ImageFeatures(self.original_size, {k: v.to(device) for k, v in self.interactive.items()})

    def host_copy(self) -> ImageFeatures:
        """A copy in host memory that shares nothing with these tensors (what waits for the cache's disk write, so
        that no device memory stays held meanwhile)."""

        def copy(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)

        return ImageFeatures(
            self.original_size, {k: copy(v) for k, v in self.interactive.items()}, [copy(t) for t in self.backbone_fpn]
        )

    def tier_tensors(self, tier: str) -> dict[str, torch.Tensor]:
        """The tensors the cache stores for ``tier`` (``interactive`` or ``concept``), by name."""
        return dict(self.interactive) if tier == "interactive" else self.fpn_tensors()

    @classmethod
    def from_tier(cls, tier: str, tensors: dict[str, torch.Tensor], original_size: tuple[int, int]) -> ImageFeatures:
        """Inverse of :meth:`tier_tensors`."""
        if tier == "interactive":
            return cls(original_size, {k: tensors[k] for k in EMBEDDING_TENSORS})
        levels = sorted(tensors, key=lambda k: int(k[len(FPN_PREFIX) :]))
        if not levels:
            raise KeyError("no backbone_fpn levels")
        return cls(original_size, backbone_fpn=[tensors[k] for k in levels])


def held(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in the dtype every feature is held in (float16: exact for the bfloat16 features a GPU computes,
    a rounding of the CPU's float32 ones), refusing values float16 cannot hold."""
    half = tensor.to(FEATURE_DTYPE)
    if not torch.isfinite(half).all():
        raise ServingError("features", "the image encoder produced values outside float16's range")
    return half


def widened(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A held feature as the float32 the model's layers take (autocast lowers it again on CUDA)."""
    return tensor.to(device=device, dtype=torch.float32)


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


@torch.inference_mode()
def encode_images(loaded: LoadedSam3, images: list[Image.Image]) -> list[ImageFeatures]:
    """One encoder pass over all ``images`` (under the model's autocast); per-image features in input order."""
    with loaded.precision():
        state = loaded.processor.set_image_batch(list(images))
        backbone_out = state["backbone_out"]
        interactive = _interactive_features(loaded, backbone_out["sam2_backbone_out"])
    return [
        ImageFeatures(
            original_size=(img.height, img.width),
            interactive={k: held(v[i : i + 1]) for k, v in interactive.items()},
            backbone_fpn=[held(level[i : i + 1]) for level in backbone_out["backbone_fpn"]],
        )
        for i, img in enumerate(images)
    ]


@torch.inference_mode()
def grounding_backbone_out(loaded: LoadedSam3, features: ImageFeatures) -> dict:
    """A fresh ``backbone_out`` for ``Sam3Processor`` text/box grounding, as ``SAM3VLBackbone`` builds it."""
    position_encoding = loaded.model.backbone.vision_backbone.position_encoding
    fpn = [widened(t, loaded.device) for t in features.backbone_fpn]
    return {
        "vision_features": fpn[-1],
        "vision_pos_enc": [position_encoding(t).to(t.dtype) for t in fpn],
        "backbone_fpn": fpn,
    }
