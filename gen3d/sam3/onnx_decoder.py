"""SAM 3's interactive prompt encoder + mask decoder + mask post-processing as one exportable module.

``InteractiveDecoder`` reproduces ``SAM3InteractiveImagePredictor.predict`` (sam3 0.1.4) on the get_embedding
tensors, with no Python control flow that depends on data, so that ONNX can carry it:

==================================================  ==========================================================
predict()                                           here
==================================================  ==========================================================
x/w*S, y/h*S (``SAM2Transforms.transform_coords``)  the same float32 ops, (h, w) read from ``orig_im_size``
box -> 2 corner points, labels 2/3, put first       the client puts a box's corners first, labels 2 and 3
the prompt encoder always appends a (0,0)/-1 point  appended in the graph: clients must not add it
  (``_predict`` passes ``boxes=None``)
no mask_input -> ``no_mask_embed``                  ``where(has_mask_input > 0.5, mask_downscaling, no_mask_embed)``
``get_dense_pe()``                                  stored once (bit-identical to eager)
multimask -> tokens 1..3                            K=3 file
single mask -> dynamic multimask via stability      K=1 file: the same where/argmax selection, in the graph
``postprocess_masks``: fill holes <= max_hole_area  exact connected components by masked max-pool label
  (skimage on the CPU, 8-connectivity)                propagation, a fixed number of steps
bilinear to the original size                       ``F.interpolate`` to (h, w) from ``orig_im_size``
low-res logits clamped to +-32                      the same
==================================================  ==========================================================

Masks leave as logits (object where > 0), as ``predict(return_logits=True)`` returns them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_NAMES = (
    "image_embed",
    "high_res_feats_0",
    "high_res_feats_1",
    "point_coords",
    "point_labels",
    "orig_im_size",
    "mask_input",
    "has_mask_input",
)
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")


def _neighbour_max(x: torch.Tensor) -> torch.Tensor:
    """Max over each pixel's 3x3 (8-connected) neighbourhood, itself included."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def fill_small_components(
    logits: torch.Tensor, threshold: float, max_area: float, fill_value: float, background: bool = True
) -> torch.Tensor:
    """``logits`` [B, K, H, W] with every 8-connected component of ``logits <= threshold`` (``background``;
    ``> threshold`` otherwise) of area <= ``max_area`` set to ``fill_value``.

    Equals sam3's ``connected_components`` + ``areas <= max_area`` without a loop over data:

    1. every selected pixel gets a unique id (1..H*W, exact in float32), the others 0;
    2. T = floor(max_area) - 1 steps of ``L = max_pool3x3(L) * selected``: ids spread one 8-neighbour step per
       step, never through unselected pixels. A component of n pixels has geodesic diameter <= n - 1, so after
       T steps every component of at most ``max_area`` pixels carries one label (its largest id) everywhere;
    3. a label group is *closed* when none of its pixels has a selected neighbour with another label: a closed
       group is exactly one whole, converged component;
    4. fill = selected and closed and count(label) <= max_area. Larger components are either not converged
       (never closed) or fail the count, so the result is exact.
    """
    if max_area <= 0:
        return logits
    b, k, h, w = logits.shape
    x = logits.reshape(b * k, 1, h, w)
    selected = (x <= threshold if background else x > threshold).to(torch.float32)
    ids = torch.arange(1, h * w + 1, dtype=torch.float32, device=x.device).reshape(1, 1, h, w)
    labels = ids * selected
    for _ in range(int(min(max(int(max_area) - 1, 0), h * w - 1))):
        labels = _neighbour_max(labels) * selected
    # A selected pixel's neighbourhood max and min over selected pixels bracket its own label, so "a selected
    # neighbour has another label" is nmax > nmin. Float products instead of And/Or: onnxruntime-web's WebGPU
    # execution provider has no And/Or kernels.
    big = float(h * w + 1)
    nmax = _neighbour_max(labels)
    nmin = -_neighbour_max(-(labels + (1.0 - selected) * big))
    is_open = selected * (nmax > nmin).to(torch.float32)
    flat = labels.reshape(b * k, h * w).to(torch.int64)
    ones = selected.reshape(b * k, h * w)
    # accumulators derived from a runtime tensor: a static torch.zeros would be folded by the dynamo exporter
    # into (B*K, H*W+1) initializers stored in the file
    zeros = torch.cat([ones, ones[:, :1]], dim=1) * 0.0
    count = zeros.scatter_add(1, flat, ones)
    opened = zeros.scatter_add(1, flat, is_open.reshape(b * k, h * w))
    area = torch.gather(count, 1, flat).reshape(b * k, 1, h, w)
    group_open = torch.gather(opened, 1, flat).reshape(b * k, 1, h, w)
    fill = selected * (area <= max_area).to(torch.float32) * (group_open == 0).to(torch.float32)
    out = torch.where(fill > 0.5, torch.tensor(fill_value, dtype=x.dtype, device=x.device), x)
    return out.reshape(b, k, h, w)


class InteractiveDecoder(nn.Module):
    """get_embedding tensors + point/box prompts -> masks, as ``SAM3InteractiveImagePredictor.predict``.

    Inputs (batch 1): ``image_embed`` [1,256,G,G], ``high_res_feats_0`` [1,32,4G,4G], ``high_res_feats_1``
    [1,64,2G,2G] (float32); ``point_coords`` [1,N,2] pixels (x, y) of the original upright image, box corners
    first; ``point_labels`` [1,N] float (1 object, 0 background, 2/3 box corners, -1 not a point);
    ``orig_im_size`` [2] int64 (h, w); ``mask_input`` [1,1,4G,4G] (an earlier ``low_res_masks``) and
    ``has_mask_input`` [1] (0 or 1).
    Outputs: ``masks`` [1,K,h,w] logits at the original size after hole filling; ``iou_predictions`` [1,K];
    ``low_res_masks`` [1,K,4G,4G] clamped to +-32, before hole filling, as predict() returns them.
    K = 3 with ``multimask_output`` (tokens 1..3), else 1 (token 0, or the best of 1..3 when token 0 is unstable).
    """

    def __init__(self, predictor, multimask_output: bool) -> None:
        super().__init__()
        model = predictor.model
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        self.image_size = float(model.image_size)
        self.multimask_output = multimask_output
        transforms = predictor._transforms
        self.hole_threshold = float(transforms.mask_threshold)
        self.max_hole_area = float(transforms.max_hole_area)
        self.max_sprinkle_area = float(transforms.max_sprinkle_area)
        self.grid = tuple(self.prompt_encoder.image_embedding_size)
        with torch.no_grad():
            self.register_buffer("dense_pe", self.prompt_encoder.get_dense_pe().clone(), persistent=False)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``PromptEncoder._embed_points`` with ``pad=True`` (what predict() always passes)."""
        encoder = self.prompt_encoder
        coords = coords + 0.5  # pixel centre
        coords = torch.cat([coords, torch.zeros_like(coords[:, :1])], dim=1)
        labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        coords = coords / self.image_size  # the input is square: both axes / image_size
        embedding = encoder.pe_layer._pe_encoding(coords)
        label = labels.unsqueeze(-1)
        # the same where-chain as sam3's, so the result is bit-identical
        embedding = torch.where(label == -1, torch.zeros_like(embedding) + encoder.not_a_point_embed.weight, embedding)
        for i in range(encoder.num_point_embeddings):
            embedding = torch.where(label == i, embedding + encoder.point_embeddings[i].weight, embedding)
        return embedding

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        encoder = self.prompt_encoder
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *self.grid)
        return torch.where(has_mask_input.reshape(1, 1, 1, 1) > 0.5, encoder.mask_downscaling(mask_input), no_mask)

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        orig_im_size: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hw = orig_im_size.to(torch.float32)
        coords = point_coords / torch.stack([hw[1], hw[0]]) * self.image_size  # transform_coords(normalize=True)
        decoder = self.mask_decoder
        masks, iou_pred, _, _ = decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=self._embed_points(coords, point_labels),
            dense_prompt_embeddings=self._embed_masks(mask_input, has_mask_input),
            repeat_image=False,
            high_res_features=[high_res_feats_0, high_res_feats_1],
        )
        if self.multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif decoder.dynamic_multimask_via_stability:
            masks, iou_pred = decoder._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]
        # SAM2Transforms.postprocess_masks: holes (and sprinkles, when configured) on the low-res logits
        filled = fill_small_components(
            masks.float(), self.hole_threshold, self.max_hole_area, self.hole_threshold + 10.0, background=True
        )
        filled = fill_small_components(
            filled, self.hole_threshold, self.max_sprinkle_area, self.hole_threshold - 10.0, background=False
        )
        upscaled = F.interpolate(filled, size=(orig_im_size[0], orig_im_size[1]), mode="bilinear", align_corners=False)
        return upscaled, iou_pred, torch.clamp(masks, -32.0, 32.0)
