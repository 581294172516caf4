"""Masks from prompts on already computed image features (no image encoder here).

Interactive prompts go through ``SAM3InteractiveImagePredictor.predict`` with the image's features set, as
``Sam3Image.predict_inst`` does and as a client holding a get_embedding file can do. Concept prompts run sam3's
own grounding (``Sam3Image.forward_grounding``) once with the text and every exemplar box, as the last of
``Sam3Processor.set_text_prompt`` + one ``add_geometric_prompt`` per box would (each of those re-runs grounding
from scratch with the prompts so far), then ``Sam3Processor._forward_grounding``'s post-processing with the
score threshold and the request's ``max_masks`` (the best scores) applied before any upsampling, a few masks at
a time, each turned into COCO RLE at once: peak memory no longer grows with the number of detections, and the work
per answer is bounded by ``max_masks``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from gen3d.sam3.features import ImageFeatures, grounding_backbone_out, widened
from gen3d.sam3.loading import LoadedSam3
from gen3d.sam3.request import SegmentPrompts
from gen3d.serving.masks import mask_from_rle, packed_rows, rle_area, rle_box, rle_from_mask

UPSAMPLE_BUDGET_BYTES = 256 * 1024 * 1024  # float32 probabilities upsampled at once (at least one mask)


@dataclass
class MaskResult:
    """One output mask as COCO RLE (original image size), its area, score and box (xyxy pixels); with
    ``return_png_masks`` also its rows of bits (``packed_rows``: what its PNG is written from, 1/8 of the mask)."""

    rle: dict
    area: int
    score: float
    box: list[float]
    prompt_index: int = 0
    rows: np.ndarray | None = None

    def mask(self) -> np.ndarray:
        """The bool HxW mask (decoded from the RLE when needed, e.g. for a PNG)."""
        return mask_from_rle(self.rle, self.rle["size"])

    @classmethod
    def of(
        cls,
        mask: np.ndarray,
        score: float,
        box: list[float] | None = None,
        prompt_index: int = 0,
        rows: np.ndarray | None = None,
    ) -> MaskResult:
        """From a mask (any array ``rle_from_mask`` takes); ``box`` defaults to the mask's own."""
        rle = rle_from_mask(mask)
        return cls(rle, rle_area(rle), score, box if box is not None else rle_box(rle), prompt_index, rows)


@dataclass
class Segmentation:
    """A segment answer's masks (at most ``max_masks``, best first in concept mode) and how many the prompts
    produced before that cap."""

    masks: list[MaskResult]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.masks)


def fitting(results: Iterable[MaskResult], rle_bytes: int | None) -> list[MaskResult]:
    """The leading ``results`` whose RLE counts add up to at most ``rle_bytes`` (all when ``None``): what bounds an
    answer's size. Reading stops at the first that does not fit, so a generator computes no further mask."""
    kept, size = [], 0
    for result in results:
        size += len(result.rle["counts"])
        if rle_bytes is not None and size > rle_bytes:
            break
        kept.append(result)
    return kept


def best(results: list[MaskResult], max_masks: int | None) -> list[MaskResult]:
    """The ``max_masks`` highest-scoring results (all when ``None``), in their order."""
    if max_masks is None or len(results) <= max_masks:
        return results
    kept = sorted(sorted(range(len(results)), key=lambda i: -results[i].score)[:max_masks])
    return [results[i] for i in kept]


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
            rows = packed_rows(mask) if prompts.return_png_masks else None
            results.append(MaskResult.of(mask, float(prompt_scores[i]), prompt_index=prompt_index, rows=rows))
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


def concept_scores(outputs: dict) -> torch.Tensor:
    """Each query's presence-weighted score, (batch 1, queries), as ``Sam3Processor._forward_grounding``'s."""
    probs = outputs["pred_logits"].sigmoid()
    presence = outputs["presence_logit_dec"].sigmoid().unsqueeze(1)
    return (probs * presence).squeeze(-1)


def kept_queries(scores: torch.Tensor, threshold: float, max_masks: int | None) -> torch.Tensor:
    """The queries scoring above ``threshold`` (strict ``>``, as sam3's), only the ``max_masks`` best of them."""
    keep = scores > threshold
    if max_masks is not None and int(keep.sum()) > max_masks:
        best_ones = torch.topk(torch.where(keep, scores, float("-inf")).flatten(), max_masks).indices
        keep = torch.zeros_like(keep).flatten().index_fill_(0, best_ones, True).view_as(keep)
    return keep


def concept_masks(
    outputs: dict, height: int, width: int, threshold: float, max_masks: int | None = None, rows: bool = False
) -> Iterator[MaskResult]:
    """``Sam3Processor._forward_grounding``'s post-processing, thresholding (and keeping the ``max_masks`` best)
    first and upsampling a few kept masks at a time (same operations: presence-weighted sigmoid scores, strict
    ``>`` threshold, bilinear upsampling without corner alignment, sigmoid, ``> 0.5``), best first (equal scores in
    query order). Each mask leaves the device transposed, so pycocotools reads its columns without a copy on the
    host; with ``rows``, also as it is, for its packed rows."""
    from sam3.model import box_ops
    from sam3.model.data_misc import interpolate

    probs = concept_scores(outputs)
    keep = kept_queries(probs, threshold, max_masks)
    scores = probs[keep].float().cpu().numpy()
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    low_res = outputs["pred_masks"][keep][torch.from_numpy(order).to(probs.device)]
    boxes = box_ops.box_cxcywh_to_xyxy(outputs["pred_boxes"][keep])
    boxes = (boxes * torch.tensor([width, height, width, height]).to(boxes.device)[None, :]).float().cpu().numpy()
    boxes = np.clip(boxes, 0, [width, height, width, height])[order]  # detections may reach past the image border
    chunk = max(1, UPSAMPLE_BUDGET_BYTES // (4 * height * width))
    for start in range(0, low_res.shape[0], chunk):
        upsampled = interpolate(
            low_res[start : start + chunk].unsqueeze(1), (height, width), mode="bilinear", align_corners=False
        ).sigmoid_()
        kept = (upsampled > 0.5).squeeze(1)
        del upsampled
        columns = kept.view(torch.uint8).transpose(1, 2).contiguous().cpu().numpy()
        packed = packed_rows(kept.cpu().numpy()) if rows else [None] * len(columns)
        del kept
        for offset, (transposed, bits) in enumerate(zip(columns, packed, strict=True)):
            i = start + offset
            yield MaskResult.of(transposed.T, float(scores[i]), [float(v) for v in boxes[i]], rows=bits)


@torch.inference_mode()
def concept_segmentation(
    loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts, rle_bytes: int | None = None
) -> Segmentation:
    """The instances of the text concept (and exemplar boxes) scoring above the threshold, best first, at most
    ``prompts.max_masks`` of them and no more than fit ``rle_bytes`` (the rest are never upsampled)."""
    height, width = features.original_size
    with loaded.precision():
        outputs = ground(loaded, features, prompts)
        total = int((concept_scores(outputs) > prompts.score_threshold).sum())
        found = concept_masks(
            outputs, height, width, prompts.score_threshold, prompts.max_masks, prompts.return_png_masks
        )
        return Segmentation(fitting(found, rle_bytes), total)


def segment_concept(loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts) -> list[MaskResult]:
    """The masks of :func:`concept_segmentation`."""
    return concept_segmentation(loaded, features, prompts).masks


def segment(
    loaded: LoadedSam3, features: ImageFeatures, prompts: SegmentPrompts, rle_bytes: int | None = None
) -> Segmentation:
    """Masks for ``prompts`` in the mode they ask for: at most ``prompts.max_masks`` (the best scores), and the
    leading ones whose RLE fits ``rle_bytes``."""
    if prompts.concept:
        return concept_segmentation(loaded, features, prompts, rle_bytes)
    results = segment_interactive(loaded, features, prompts)
    return Segmentation(fitting(best(results, prompts.max_masks), rle_bytes), len(results))
