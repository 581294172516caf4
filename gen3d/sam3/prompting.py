"""Masks from prompts on already computed image features (no image encoder here).

Concept prompts go through sam3's ``Sam3Processor`` (text, exemplar boxes, its score filter); interactive
prompts through ``SAM3InteractiveImagePredictor.predict`` with the image's features set, as
``Sam3Image.predict_inst`` does and as a client holding a get_embedding file can do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gen3d.sam3.features import ImageFeatures, grounding_backbone_out, processor
from gen3d.sam3.loading import LoadedSam3
from gen3d.sam3.request import SegmentPrompts
from gen3d.serving.masks import box_of


@dataclass
class MaskResult:
    """One output mask (original image size), its score and box (xyxy pixels)."""

    mask: np.ndarray
    score: float
    box: list[float]
    prompt_index: int = 0


def set_interactive_features(predictor, interactive: dict[str, torch.Tensor], original_size: tuple[int, int]) -> None:
    """Gives ``SAM3InteractiveImagePredictor`` an image's features without running the image encoder."""
    predictor.reset_predictor()
    predictor._features = {
        "image_embed": interactive["image_embed"],
        "high_res_feats": [interactive["high_res_feats.0"], interactive["high_res_feats.1"]],
    }
    predictor._orig_hw = [tuple(original_size)]
    predictor._is_image_set = True


@torch.inference_mode()
def segment_interactive(loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts) -> list[MaskResult]:
    """SAM 1-style masks: one per box (or one for the points); 3 candidates each with ``multimask``."""
    predictor = loaded.model.inst_interactive_predictor
    interactive = {k: v.to(loaded.device) for k, v in features.interactive.items()}
    set_interactive_features(predictor, interactive, features.original_size)
    try:
        with loaded.precision():
            masks, scores, _ = predictor.predict(
                point_coords=prompts.points,
                point_labels=prompts.point_labels,
                box=prompts.boxes,
                multimask_output=prompts.multimask,
            )
    finally:
        predictor.reset_predictor()
    if masks.ndim == 3:  # one prompt: (C, H, W)
        masks, scores = masks[None], scores[None]
    results = []
    for prompt_index, (prompt_masks, prompt_scores) in enumerate(zip(masks, scores, strict=True)):
        for i in np.argsort(-prompt_scores):
            mask = prompt_masks[i] > 0
            results.append(MaskResult(mask, float(prompt_scores[i]), box_of(mask), prompt_index))
    return results


@torch.inference_mode()
def segment_concept(loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts) -> list[MaskResult]:
    """Every instance of the text concept (and exemplar boxes) scoring above the threshold."""
    proc = processor(loaded, confidence_threshold=prompts.score_threshold)
    height, width = features.original_size
    state = {
        "original_height": height,
        "original_width": width,
        "backbone_out": grounding_backbone_out(loaded, features),
    }
    with loaded.precision():
        state = proc.set_text_prompt(prompts.text, state)
        for box, label in zip(prompts.boxes if prompts.boxes is not None else [], prompts.box_labels, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            cxcywh = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
            state = proc.add_geometric_prompt(cxcywh, label, state)
    masks = state["masks"].squeeze(1).cpu().numpy()
    scores = state["scores"].float().cpu().numpy()
    boxes = state["boxes"].float().cpu().numpy()
    boxes = np.clip(boxes, 0, [width, height, width, height])  # detections may reach past the image border
    order = np.argsort(-scores)
    return [MaskResult(masks[i], float(scores[i]), [float(v) for v in boxes[i]]) for i in order]


def segment(loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts) -> list[MaskResult]:
    """Masks for ``prompts`` in the mode they ask for."""
    if prompts.concept:
        return segment_concept(loaded, features, prompts)
    return segment_interactive(loaded, features, prompts)
