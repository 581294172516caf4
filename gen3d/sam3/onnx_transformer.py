"""SAM's mask decoder (sam3 0.1.4 ``MaskDecoder.predict_masks`` and its ``TwoWayTransformer``), batch 1, split into
the work that depends only on the image (:func:`prepare_image`, once per embedding) and the work of a click
(:func:`predict_masks`): the same function (up to the GELUs' form, :data:`GELU_APPROXIMATION`), a third of the
multiply-adds of sam3's per click at G = 72 (0.68 G against 2.24 G for one click; the preparation: 2.7 G).

The image's N = G*G tokens meet the T tokens (SAM's output tokens and the prompt's: 8 for one click) in cross
attentions. The first layer's projections of the image tokens are the embedding's, made once; later layers' image
tokens stay factored over the embedding's (:mod:`gen3d.sam3.onnx_image_tokens`), so that their products with the
attentions' weights and the first transposed convolution's are the embedding's products plus low-rank terms. The
final token -> image attention runs only for the tokens whose outputs are read (the IoU token and the mask tokens).

The upscaling (two 2x2 stride-2 transposed convolutions, a LayerNorm2d, GELUs) maps each image token to its own
4x4 block of the 4G x 4G logits and mixes nothing across tokens, so it runs as matrix products on the tokens in a
blocked, channels-last layout (rows: token, then sub-pixel; the high-resolution features permuted to match, with the
convolutions' biases added, once per embedding); ``ClickDecoder``'s choice among the mask planes runs on that
layout, and only the planes it reads are made (``planes``) and put back in picture order (:func:`unblocked`). With
erf's GELU, the logits are sam3's to float32 rounding (within 1e-4 of logits up to ~100 in the unit test).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gen3d.sam3.onnx_image_tokens import (
    PROJECTION_NAMES,
    ROW_STATS,
    Factored,
    as_basis,
    centred_blocks,
    conv_transpose_matrix,
    factored_image_to_token_probs,
    heads_view,
    image_to_token_probs,
    layer_norm,
    mixed_values,
    out_cross,
    prepared_projections,
    token_to_image,
    token_to_projected_image,
)

PREPARED_NAMES = (*PROJECTION_NAMES, "high_res_1", "high_res_0")
# The upscaling's GELUs (sam3: erf's form). onnxruntime-web computes erf per value, ~3x the time of tanh's form
# (docs/performance.md); tanh's form is within 5e-4 of erf's per value, which moves the logits by < 1e-3 of their
# range (tests/unit/test_sam3_onnx.py).
GELU_APPROXIMATION = "tanh"


def _blocked(feature: torch.Tensor, grid: int, levels: int) -> torch.Tensor:
    """[1,C,2^L G,2^L G] -> [G*G*4^(L-1), 4C]: rows token then sub-pixel blocks, columns the last 2x2 block's
    (row, column, channel), as the transposed convolutions' products come out."""
    c = feature.shape[1]
    split = feature.reshape(c, grid, *[2] * levels, grid, *[2] * levels)  # (c, i, a1..aL, j, b1..bL)
    rows = [1, 2 + levels]
    for level in range(levels):
        rows += [2 + level, 3 + levels + level]
    return split.permute(*rows, 0).reshape(grid * grid * 4 ** (levels - 1), 4 * c)


def prepare_image(decoder, image_embeddings, dense_prompt_embeddings, image_pe, high_res) -> tuple[torch.Tensor, ...]:
    """The prompt-independent work of :func:`predict_masks`, in ``PREPARED_NAMES`` order: the embedding's
    products (:func:`~gen3d.sam3.onnx_image_tokens.prepared_projections`) and the high-resolution features in the
    upscaling's blocked layout with its biases added."""
    transformer = decoder.transformer
    depth = len(transformer.layers)
    if depth != 2:
        raise ValueError(f"the ONNX decoder takes a two-way transformer of depth 2 (sam3's); this one has {depth}")
    cross = [a for b in transformer.layers for a in (b.cross_attn_token_to_image, b.cross_attn_image_to_token)]
    if len({a.num_heads for a in [*cross, transformer.final_attn_token_to_image]}) != 1:
        raise ValueError("the ONNX decoder takes cross attentions of one head count (sam3's: 8)")
    grid = image_embeddings.shape[-1]
    tokens = (image_embeddings + dense_prompt_embeddings).flatten(2).squeeze(0).transpose(0, 1)
    pe = image_pe.flatten(2).squeeze(0).transpose(0, 1)
    dc1, _, _, dc2, _ = decoder.output_upscaling
    feat_s0, feat_s1 = high_res
    high_res_1 = (_blocked(feat_s1, grid, 1).reshape(grid * grid, 4, -1) + dc1.bias).reshape(grid * grid, -1)
    high_res_1 = centred_blocks(high_res_1, dc1.weight.shape[1])  # the LayerNorm2d's centring (_upscaled_masks)
    high_res_0 = (_blocked(feat_s0, grid, 2).reshape(4 * grid * grid, 4, -1) + dc2.bias).reshape(4 * grid * grid, -1)
    return (*prepared_projections(decoder, tokens, pe), high_res_1, high_res_0)


def _token_block_start(block, queries: torch.Tensor, point_embedding: torch.Tensor) -> torch.Tensor:
    """A two-way block's self attention of the tokens."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + point_embedding
        queries = queries + block.self_attn(q=q, k=q, v=queries)
    return block.norm1(queries)


def _token_block_middle(block, queries: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """A two-way block's token update after its token -> image attention."""
    queries = block.norm2(queries + attended)
    return block.norm3(queries + block.mlp(queries))


def two_way_transformer(transformer, p: dict, point_embedding: torch.Tensor, rows: slice):
    """``TwoWayTransformer.forward`` (batch 1, depth 2) from :func:`prepare_image`'s tensors by name: the tokens
    ``rows`` after the final attention and its norm [1, len, C], and the image tokens (factored, of gain g1 * g2)."""
    stat = {name: p["row_stats"][:, i] for i, name in enumerate(ROW_STATS)}
    first, second = transformer.layers

    queries = _token_block_start(first, point_embedding, point_embedding)
    attended = token_to_projected_image(
        first.cross_attn_token_to_image, queries + point_embedding, p["layer0_keys"], p["layer0_values"]
    )
    queries = _token_block_middle(first, queries, attended)
    to_token = first.cross_attn_image_to_token
    kh0, vh0, mixed0 = mixed_values(to_token, queries + point_embedding, queries)
    probs0 = image_to_token_probs(heads_view(p["layer0_queries"], kh0.shape[0]), kh0)  # [H, N, T]
    # X0 + P0 M0: the tokens less their means, which the LayerNorm removes anyway
    summed = Factored(torch.ones_like(stat["square"]), as_basis(probs0), mixed0)
    cross = out_cross(p["layer0_out"], probs0, vh0) + stat["out_bias_first"]
    image, inv1, mean1 = layer_norm(first.norm4, summed, None, stat["square"], cross)

    queries = _token_block_start(second, queries, point_embedding)
    attended = token_to_image(
        second.cross_attn_token_to_image,
        queries + point_embedding,
        image,
        p["layer1_keys"],
        p["layer1_keys_pe"],
        p["layer1_values"],
    )
    queries = _token_block_middle(second, queries, attended)
    to_token = second.cross_attn_image_to_token
    kh1, vh1, mixed1 = mixed_values(to_token, queries + point_embedding, queries)
    probs1 = factored_image_to_token_probs(to_token, image, p["layer1_queries"], p["layer1_queries_pe"], kh1)
    parts = (image.basis, as_basis(probs1))
    summed = Factored(image.scale, torch.cat(parts, dim=1), torch.cat([image.coeffs, mixed1]))
    # sum_r basis * ((X0 * g1) @ coeffs^T) over the basis [inv1 P0, -mean1 inv1, 1, P1]
    cross = (
        inv1 * (out_cross(p["layer1_out_first"], probs0, vh0) + stat["gain2_out_bias_first"])
        - mean1 * inv1 * stat["gain_gamma"]
        + stat["gain_beta"]
        + out_cross(p["layer1_out"], probs1, vh1)
        + stat["gain_out_bias"]
    )
    image, _, _ = layer_norm(second.norm4, summed, stat["gain_mean"], stat["gain_centered_square"], cross, parts)

    chosen, chosen_pe = queries[:, rows], point_embedding[:, rows]
    final = transformer.final_attn_token_to_image
    attended = token_to_image(final, chosen + chosen_pe, image, p["final_keys"], p["final_keys_pe"], p["final_values"])
    return transformer.norm_final_attn(chosen + attended), image


def _layer_norm_of_centred(x: torch.Tensor, norm) -> torch.Tensor:
    """``norm`` over the last axis of x whose rows are centred already (mean 0), in single ops (onnxruntime-web's
    LayerNormalization takes ~2x as long); the variance's epsilon is added to the variances as a vector, which
    onnxruntime adds ~20x faster than as a column."""
    inv = torch.rsqrt((x * x).mean(dim=-1) + norm.eps).unsqueeze(-1)
    return x * inv * norm.weight + norm.bias


def _upscaled_masks(decoder, image: Factored, prepared: dict, hyper_in: torch.Tensor) -> torch.Tensor:
    """``hyper_in @ output_upscaling(keys)`` with the high-resolution features, from the factored image tokens:
    [1, K, 16N, 1] in the blocked order (the sub-pixels of each token together; :func:`unblocked`). The GELUs
    are tanh's form (:data:`GELU_APPROXIMATION`)."""
    dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
    if not (isinstance(act1, torch.nn.GELU) and isinstance(act2, torch.nn.GELU)):
        raise ValueError("the ONNX decoder takes an upscaling with GELUs (sam3's)")
    c1, c2 = dc1.weight.shape[1], dc2.weight.shape[1]
    w1, w2 = conv_transpose_matrix(dc1), conv_transpose_matrix(dc2)  # [C, (a, b, c1)], [c1, (a, b, c2)]
    # the LayerNorm2d's centring (over each sub-pixel's c1 channels) is folded into w1 and into the prepared upscale
    # and high_res_1, which the sum below adds: centred terms make a centred sum (no Sub and mean per click)
    w1 = centred_blocks(w1, c1)
    upscaled = (image.project(prepared["upscale"], w1) + prepared["high_res_1"]).reshape(-1, c1)  # [4N, c1]
    upscaled = F.gelu(_layer_norm_of_centred(upscaled, ln1), approximate=GELU_APPROXIMATION)  # over channels
    upscaled = F.gelu((upscaled @ w2 + prepared["high_res_0"]).reshape(-1, c2), approximate=GELU_APPROXIMATION)
    logits = hyper_in.squeeze(0) @ upscaled.t()  # [K, 16N]
    return logits.unsqueeze(0).unsqueeze(-1)  # [1, K, 16N, 1]


def unblocked(masks: torch.Tensor) -> torch.Tensor:
    """Mask planes [1, K, 16N, 1] in the blocked order -> [1, K, 4G, 4G] in picture order."""
    k = masks.shape[1]
    grid = math.isqrt(masks.shape[2] // 16)
    blocks = masks.reshape(k, grid, grid, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)  # (K, i, a, c, j, b, d)
    return blocks.reshape(1, k, 4 * grid, 4 * grid)


def predict_blocked_masks(decoder, prepared, sparse_prompt_embeddings, planes=None):
    """``MaskDecoder.predict_masks(..., repeat_image=False, high_res_features=...)`` (batch 1) from
    :func:`prepare_image`'s tensors: masks [1, P, 16N, 1] in the blocked order and their IoU predictions [1, P].
    ``planes``: all M IoU predictions -> the indices [P] of the mask tokens whose planes are made (None: all M)."""
    if not decoder.use_high_res_features:
        raise ValueError("the ONNX decoder needs a mask decoder with high-resolution features (sam3's has them)")
    s = 1 if decoder.pred_obj_scores else 0
    weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    if decoder.pred_obj_scores:
        weights.insert(0, decoder.obj_score_token.weight)
    tokens = torch.cat([torch.cat(weights, dim=0).unsqueeze(0), sparse_prompt_embeddings], dim=1)
    rows = slice(s, s + 1 + decoder.num_mask_tokens)  # the IoU token and the mask tokens
    named = dict(zip(PREPARED_NAMES, prepared, strict=True))
    hs, image = two_way_transformer(decoder.transformer, named, tokens, rows)
    iou = decoder.iou_prediction_head(hs[:, 0, :])
    mask_tokens_out = hs[:, 1:, :]
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    if planes is not None:
        chosen = planes(iou)
        hyper_in, iou = torch.index_select(hyper_in, 1, chosen), torch.index_select(iou, 1, chosen)
    return _upscaled_masks(decoder, image, named, hyper_in), iou


def predict_masks(decoder, prepared, sparse_prompt_embeddings):
    """:func:`predict_blocked_masks` with the masks in picture order, [1, M, 4G, 4G]."""
    masks, iou = predict_blocked_masks(decoder, prepared, sparse_prompt_embeddings)
    return unblocked(masks), iou
