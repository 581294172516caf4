"""SAM 3's interactive prompt encoder + mask decoder as exportable modules (post-processing: the client's).

``PrepareEmbedding`` and ``ClickDecoder`` together reproduce ``SAM3InteractiveImagePredictor.predict`` (sam3 0.1.4)
on the get_embedding tensors, with no Python control flow that depends on data, so that ONNX can carry them; the
export joins them in one file (:mod:`gen3d.sam3.onnx_graphs`) whose prompt-independent part runs only when the
client has not handed back an earlier run's ``prepared_*`` outputs:

==================================================  ==========================================================
predict()                                           here
==================================================  ==========================================================
x/w*S, y/h*S (``SAM2Transforms.transform_coords``)  the same float32 ops, (h, w) read from ``orig_im_size``
box -> 2 corner points, labels 2/3, put first       the client puts a box's corners first, labels 2 and 3
the prompt encoder always appends a (0,0)/-1 point  appended in the graph: clients must not add it
  (``_predict`` passes ``boxes=None``)
no mask_input -> ``no_mask_embed``                  ``where(has_mask_input > 0.5, mask_downscaling, no_mask_embed)``
``get_dense_pe()``                                  stored once (bit-identical to eager)
``MaskDecoder.predict_masks``                       the same function, split into the image's part (once per
                                                      embedding) and a click's, the image tokens factored
                                                      (:mod:`gen3d.sam3.onnx_image_tokens`): ~1e-5; GELUs of
                                                      the upscaling in tanh's form (within 5e-4 per value)
multimask -> tokens 1..3                            K=3 file
single mask -> dynamic multimask via stability      K=1 file: the same where/argmax selection, in the graph
                                                      (on the planes' blocked layout: areas are order-free)
``postprocess_masks``: fill holes <= max_hole_area  left to the client, at low resolution: the page's
  (8-connectivity), bilinear to the original size     ``web/src/postprocess.js``, Python's :mod:`gen3d.sam3.onnx_client`
low-res logits clamped to +-32                      the same
==================================================  ==========================================================

Masks leave as low-resolution logits (object where > ``mask_threshold`` once post-processed). Format v1 did the
post-processing in the graph; at 1008 px its full-size upsampling and max-pool hole filling took most of a
click's time in the browser (docs/demo-page.md).
"""

from __future__ import annotations

import torch
from torch import nn

from gen3d.sam3.onnx_transformer import PREPARED_NAMES, predict_blocked_masks, prepare_image, unblocked

EMBEDDING_INPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1", "mask_input", "has_mask_input")
PROMPT_INPUTS = ("point_coords", "point_labels", "orig_im_size")
OUTPUT_NAMES = ("low_res_logits", "iou_predictions", "low_res_masks")


class _DecoderParts(nn.Module):
    """The predictor's prompt encoder and mask decoder, and what both halves read of them."""

    def __init__(self, predictor) -> None:
        super().__init__()
        model = predictor.model
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        self.image_size = float(model.image_size)
        self.grid = tuple(self.prompt_encoder.image_embedding_size)
        with torch.no_grad():
            self.register_buffer("dense_pe", self.prompt_encoder.get_dense_pe().clone(), persistent=False)


def _multimask_planes(iou: torch.Tensor) -> torch.Tensor:
    """Tokens 1..M-1 (``multimask_output``)."""
    return torch.arange(1, iou.shape[1], device=iou.device)


def _single_and_best_planes(iou: torch.Tensor) -> torch.Tensor:
    """Token 0 and the multimask token of the highest IoU prediction (``_dynamic_multimask_via_stability``'s)."""
    best = 1 + torch.argmax(iou[0, 1:], dim=0, keepdim=True)
    return torch.cat([torch.zeros_like(best), best])


def _single_plane(iou: torch.Tensor) -> torch.Tensor:
    """Token 0."""
    return torch.zeros_like(iou[0, :1], dtype=torch.long)


class PrepareEmbedding(_DecoderParts):
    """get_embedding tensors -> the prompt-independent tensors of ``PREPARED_NAMES`` (once per embedding).

    Inputs (batch 1, float32): ``image_embed`` [1,256,G,G], ``high_res_feats_0`` [1,32,4G,4G], ``high_res_feats_1``
    [1,64,2G,2G]; ``mask_input`` [1,1,4G,4G] (an earlier ``low_res_masks``) and ``has_mask_input`` [1] (0 or 1).
    """

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        encoder = self.prompt_encoder
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *self.grid)
        dense = torch.where(has_mask_input.reshape(1, 1, 1, 1) > 0.5, encoder.mask_downscaling(mask_input), no_mask)
        return prepare_image(self.mask_decoder, image_embed, dense, self.dense_pe, [high_res_feats_0, high_res_feats_1])


class ClickDecoder(_DecoderParts):
    """``PrepareEmbedding``'s tensors + point/box prompts -> masks, as ``SAM3InteractiveImagePredictor.predict``.

    Inputs: the prepared tensors; ``point_coords`` [1,N,2] pixels (x, y) of the original upright image, box
    corners first; ``point_labels`` [1,N] float (1 object, 0 background, 2/3 box corners, -1 not a point);
    ``orig_im_size`` [2] int64 (h, w).
    Outputs: ``low_res_logits`` [1,K,4G,4G] before hole filling and upsampling; ``iou_predictions`` [1,K];
    ``low_res_masks`` [1,K,4G,4G] the same clamped to +-32, as predict() returns them (a later ``mask_input``).
    K = 3 with ``multimask_output`` (tokens 1..3), else 1 (token 0, or the best of 1..3 when token 0 is unstable).
    """

    def __init__(self, predictor, multimask_output: bool) -> None:
        super().__init__(predictor)
        self.multimask_output = multimask_output

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

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``PREPARED_NAMES``' tensors, then ``point_coords``, ``point_labels``, ``orig_im_size``."""
        if len(inputs) != len(PREPARED_NAMES) + 3:
            raise TypeError(f"ClickDecoder takes {len(PREPARED_NAMES)} prepared tensors and 3 prompt tensors")
        *prepared, point_coords, point_labels, orig_im_size = inputs
        hw = orig_im_size.to(torch.float32)
        coords = point_coords / torch.stack([hw[1], hw[0]]) * self.image_size  # transform_coords(normalize=True)
        decoder = self.mask_decoder
        sparse = self._embed_points(coords, point_labels)
        stability = not self.multimask_output and decoder.dynamic_multimask_via_stability
        if self.multimask_output:
            planes = _multimask_planes
        else:
            planes = _single_and_best_planes if stability else _single_plane
        # the selection reads areas only, so it runs on the blocked planes, and only the chosen planes are reordered
        masks, iou_pred = predict_blocked_masks(decoder, prepared, sparse, planes)
        if stability:
            # sam3's rule reads token 0's plane and the multimask plane of the best IoU only: given just those two
            # and their IoUs, it makes the same choice
            masks, iou_pred = decoder._dynamic_multimask_via_stability(masks, iou_pred)
        masks = unblocked(masks.float())
        return masks, iou_pred, torch.clamp(masks, -32.0, 32.0)
