"""Masks from prompts on already computed image features (no image encoder here).

Interactive prompts go through ``SAM3InteractiveImagePredictor.predict`` with the image's features set, as
``Sam3Image.predict_inst`` does and as a client holding a get_embedding file can do. Concept prompts run sam3's
own grounding (``Sam3Image.forward_grounding``) once with the text and every exemplar box, as the last of
``Sam3Processor.set_text_prompt`` + one ``add_geometric_prompt`` per box would (each of those re-runs grounding
from scratch with the prompts so far), then ``Sam3Processor._forward_grounding``'s post-processing with the
score threshold applied before any upsampling, a few masks at a time, each turned into COCO RLE at once: peak
memory no longer grows with the number of detections.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from gen3d.sam3.features import ImageFeatures, grounding_backbone_out, widened
from gen3d.sam3.loading import LoadedSam3
from gen3d.sam3.request import SegmentPrompts
from gen3d.serving.masks import box_of, mask_from_rle, rle_from_mask

UPSAMPLE_BUDGET_BYTES = 256 * 1024 * 1024  # float32 probabilities upsampled at once (at least one mask)


@dataclass
class MaskResult:
    """One output mask as COCO RLE (original image size), its area, score and box (xyxy pixels)."""

    rle: dict
    area: int
    score: float
    box: list[float]
    prompt_index: int = 0

    def mask(self) -> np.ndarray:
        """The bool HxW mask (decoded from the RLE when needed, e.g. for a PNG)."""
        return mask_from_rle(self.rle, self.rle["size"])

    @classmethod
    def of(cls, mask: np.ndarray, score: float, box: list[float], prompt_index: int = 0) -> MaskResult:
        return cls(rle_from_mask(mask), int(mask.sum()), score, box, prompt_index)


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
    interactive = {k: widened(v, loaded.device) for k, v in features.interactive.items()}
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
            results.append(MaskResult.of(mask, float(prompt_scores[i]), box_of(mask), prompt_index))
    return results


def exemplar_boxes(prompts: SegmentPrompts, height: int, width: int) -> list[list[float]]:
    """The exemplar boxes normalised to cx, cy, w, h, as ``add_geometric_prompt`` takes them."""
    boxes = prompts.boxes if prompts.boxes is not None else []
    return [
        [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
        for x0, y0, x1, y1 in (map(float, box) for box in boxes)
    ]


def ground(loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts) -> dict:
    """One ``forward_grounding`` with the text and every exemplar box (in request order)."""
    model, device = loaded.model, loaded.device
    height, width = features.original_size
    backbone_out = grounding_backbone_out(loaded, features)
    backbone_out.update(model.backbone.forward_text([prompts.text], device=device))
    geometric_prompt = model._get_dummy_prompt()
    boxes = exemplar_boxes(prompts, height, width)
    if boxes:  # K appends of [1, 1, 4] (add_geometric_prompt) equal one append of [K, 1, 4]
        geometric_prompt.append_boxes(
            torch.tensor(boxes, device=device, dtype=torch.float32).view(-1, 1, 4),
            torch.tensor(list(prompts.box_labels), device=device, dtype=torch.bool).view(-1, 1),
        )
    return model.forward_grounding(
        backbone_out=backbone_out,
        find_input=loaded.processor.find_stage,
        geometric_prompt=geometric_prompt,
        find_target=None,
    )


def concept_masks(outputs: dict, height: int, width: int, threshold: float) -> Iterator[MaskResult]:
    """``Sam3Processor._forward_grounding``'s post-processing, thresholding first and upsampling a few kept masks
    at a time (same operations: presence-weighted sigmoid scores, strict ``>`` threshold, bilinear upsampling
    without corner alignment, sigmoid, ``> 0.5``), in query order."""
    from sam3.model import box_ops
    from sam3.model.data_misc import interpolate

    probs = outputs["pred_logits"].sigmoid()
    presence = outputs["presence_logit_dec"].sigmoid().unsqueeze(1)
    probs = (probs * presence).squeeze(-1)
    keep = probs > threshold
    scores = probs[keep].float().cpu().numpy()
    low_res = outputs["pred_masks"][keep]
    boxes = box_ops.box_cxcywh_to_xyxy(outputs["pred_boxes"][keep])
    boxes = (boxes * torch.tensor([width, height, width, height]).to(boxes.device)[None, :]).float().cpu().numpy()
    boxes = np.clip(boxes, 0, [width, height, width, height])  # detections may reach past the image border
    chunk = max(1, UPSAMPLE_BUDGET_BYTES // (4 * height * width))
    for start in range(0, low_res.shape[0], chunk):
        upsampled = interpolate(
            low_res[start : start + chunk].unsqueeze(1), (height, width), mode="bilinear", align_corners=False
        ).sigmoid_()
        masks = (upsampled > 0.5).squeeze(1).cpu().numpy()
        del upsampled
        for offset, mask in enumerate(masks):
            i = start + offset
            yield MaskResult.of(mask, float(scores[i]), [float(v) for v in boxes[i]])


@torch.inference_mode()
def segment_concept(loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts) -> list[MaskResult]:
    """Every instance of the text concept (and exemplar boxes) scoring above the threshold, best first."""
    height, width = features.original_size
    with loaded.precision():
        outputs = ground(loaded, features, prompts)
        results = list(concept_masks(outputs, height, width, prompts.score_threshold))
    return sorted(results, key=lambda r: -r.score)


def segment(loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts) -> list[MaskResult]:
    """Masks for ``prompts`` in the mode they ask for."""
    if prompts.concept:
        return segment_concept(loaded, features, prompts)
    return segment_interactive(loaded, features, prompts)
