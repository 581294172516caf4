"""SAM's mask decoder (sam3 0.1.4 ``MaskDecoder.predict_masks`` and its ``TwoWayTransformer``), batch 1, split into
the work that depends only on the image (:func:`prepare_image`, once per embedding) and the work of a click
(:func:`predict_masks`): the same function, about 0.6x the multiply-adds of sam3's per click at G = 72.

The image's N = G*G tokens meet the T prompt tokens (8 for one click) in cross attentions. Per head h:

- first layer: the image tokens are still the embedding, so their projections (token -> image keys and values,
  image -> token queries: N x 256 x 128 multiply-adds each) are the embedding's, made once;
- later layers, reassociated (products are associative): token -> image
  ``q_h (x W_k,h + b_k,h)^T = (q_h W_k,h) x^T + const`` (a constant per query row cancels in the softmax) and
  ``P_h (x W_v,h + b_v,h) = (P_h x) W_v,h + b_v,h`` (softmax rows sum to 1); image -> token
  ``(x W_q,h + b_q,h) k_h^T = x (W_q,h k_h^T) + b_q,h k_h^T``: N x 256 x 8T each, cheaper while 8T < 128;
- every image -> token output: ``out_proj(concat_h A_h v_h) = sum_h A_h (v_h W_o,h) + b_o``.

The upscaling (two 2x2 stride-2 transposed convolutions, a LayerNorm2d, GELUs) maps each image token to its own
4x4 block of the 4G x 4G logits and mixes nothing across tokens, so it runs as matrix products on the tokens in a
blocked, channels-last layout (rows: token, then sub-pixel; the high-resolution features permuted to match, with the
convolutions' biases added, once per embedding), and only the K mask planes are put back in picture order.
Float32 rounding differs from sam3's order by ~1e-6 relative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _heads(attn) -> tuple[int, int]:
    return attn.num_heads, attn.internal_dim // attn.num_heads


def _token_to_image(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q=q, k=k, v=v)`` for q [1,T,C] tokens, k/v [1,N,C] image tokens, without projecting the image."""
    heads, head_dim = _heads(attn)
    t = q.shape[1]
    qh = (attn.q_proj(q) / math.sqrt(head_dim)).reshape(t, heads, head_dim).transpose(0, 1)  # [H,T,d]
    wk = attn.k_proj.weight.reshape(heads, head_dim, -1)  # [H,d,C]
    scores = torch.matmul(torch.matmul(qh, wk).reshape(heads * t, -1), k.squeeze(0).transpose(0, 1))  # [H*T, N]
    probs = torch.softmax(scores, dim=-1)
    pooled = torch.matmul(probs, v.squeeze(0)).reshape(heads, t, -1)  # [H,T,C]
    wv = attn.v_proj.weight.reshape(heads, head_dim, -1)
    out = torch.matmul(pooled, wv.transpose(1, 2)) + attn.v_proj.bias.reshape(heads, 1, head_dim)  # [H,T,d]
    return attn.out_proj(out.transpose(0, 1).reshape(1, t, heads * head_dim))


def _token_to_projected_image(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q=q, ...)`` for q [1,T,C] tokens against image tokens already projected: k, v [N, heads*d]."""
    heads, head_dim = _heads(attn)
    t = q.shape[1]
    qh = attn.q_proj(q).reshape(t, heads, head_dim).transpose(0, 1)  # [H,T,d]
    kh = k.reshape(-1, heads, head_dim).permute(1, 2, 0)  # [H,d,N]
    probs = torch.softmax(torch.matmul(qh, kh) / math.sqrt(head_dim), dim=-1)  # [H,T,N]
    pooled = torch.matmul(probs, v.reshape(-1, heads, head_dim).transpose(0, 1))  # [H,T,d]
    return attn.out_proj(pooled.transpose(0, 1).reshape(1, t, heads * head_dim))


def _mixed_values(attn, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For image -> token attention over tokens k/v [1,T,C]: keys per head [H,T,d] scaled by 1/sqrt(d), and
    ``v_h W_o,h`` stacked [H*T, C]."""
    heads, head_dim = _heads(attn)
    t = k.shape[1]
    kh = (attn.k_proj(k.squeeze(0)) / math.sqrt(head_dim)).reshape(t, heads, head_dim).transpose(0, 1)
    vh = attn.v_proj(v.squeeze(0)).reshape(t, heads, head_dim).transpose(0, 1)  # [H,T,d]
    wo = attn.out_proj.weight.reshape(-1, heads, head_dim).permute(1, 2, 0)  # [H,d,C]
    return kh, torch.matmul(vh, wo).reshape(heads * t, -1)


def _image_to_token(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q=q, k=k, v=v)`` for q [1,N,C] image tokens, k/v [1,T,C] tokens, without projecting the image."""
    heads, _ = _heads(attn)
    kh, mixed = _mixed_values(attn, k, v)
    t = kh.shape[1]
    wq = attn.q_proj.weight.reshape(heads, kh.shape[2], -1)  # [H,d,C]
    folded = torch.matmul(wq.transpose(1, 2), kh.transpose(1, 2))  # [H,C,T]
    offset = torch.matmul(attn.q_proj.bias.reshape(heads, 1, -1), kh.transpose(1, 2))  # [H,1,T]
    n = q.shape[1]
    scores = torch.matmul(q.squeeze(0), folded.transpose(0, 1).reshape(-1, heads * t)) + offset.reshape(1, heads * t)
    probs = torch.softmax(scores.reshape(n, heads, t), dim=-1).reshape(n, heads * t)
    return (torch.matmul(probs, mixed) + attn.out_proj.bias).unsqueeze(0)


def _projected_image_to_token(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q=., k=k, v=v)`` for image tokens already projected to queries q [N, heads*d], k/v [1,T,C] tokens."""
    heads, head_dim = _heads(attn)
    kh, mixed = _mixed_values(attn, k, v)
    n, t = q.shape[0], kh.shape[1]
    scores = torch.matmul(q.reshape(n, heads, head_dim).transpose(0, 1), kh.transpose(1, 2))  # [H,N,T]
    probs = torch.softmax(scores, dim=-1).transpose(0, 1).reshape(n, heads * t)
    return (torch.matmul(probs, mixed) + attn.out_proj.bias).unsqueeze(0)


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
    """The prompt-independent work of :func:`predict_masks`: the image tokens [N,C] (embedding + dense prompt),
    the first layer's projections of them (token -> image keys and values, image -> token queries: [N, heads*d]),
    and the high-resolution features in the upscaling's blocked layout with its biases added."""
    grid = image_embeddings.shape[-1]
    tokens = (image_embeddings + dense_prompt_embeddings).flatten(2).squeeze(0).transpose(0, 1)
    pe = image_pe.flatten(2).squeeze(0).transpose(0, 1)
    first = decoder.transformer.layers[0]
    token_to_image, image_to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    dc1, _, _, dc2, _ = decoder.output_upscaling
    feat_s0, feat_s1 = high_res
    high_res_1 = (_blocked(feat_s1, grid, 1).reshape(grid * grid, 4, -1) + dc1.bias).reshape(grid * grid, -1)
    high_res_0 = (_blocked(feat_s0, grid, 2).reshape(4 * grid * grid, 4, -1) + dc2.bias).reshape(4 * grid * grid, -1)
    return (
        tokens,
        token_to_image.k_proj(tokens + pe),
        token_to_image.v_proj(tokens),
        image_to_token.q_proj(tokens + pe),
        high_res_1,
        high_res_0,
    )


def two_way_transformer(transformer, prepared, image_pe: torch.Tensor, point_embedding: torch.Tensor):
    """``TwoWayTransformer.forward`` (batch 1) from :func:`prepare_image`'s tokens and first-layer projections."""
    keys, first_keys, first_values, first_queries = prepared[:4]
    keys = keys.unsqueeze(0)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = point_embedding
    for index, block in enumerate(transformer.layers):
        if block.skip_first_layer_pe:
            queries = block.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + block.self_attn(q=q, k=q, v=queries)
        queries = block.norm1(queries)
        to_image, to_token = block.cross_attn_token_to_image, block.cross_attn_image_to_token
        if index == 0:
            attended = _token_to_projected_image(to_image, queries + point_embedding, first_keys, first_values)
        else:
            attended = _token_to_image(to_image, queries + point_embedding, keys + key_pe, keys)
        queries = block.norm2(queries + attended)
        queries = block.norm3(queries + block.mlp(queries))
        if index == 0:
            attended = _projected_image_to_token(to_token, first_queries, queries + point_embedding, queries)
        else:
            attended = _image_to_token(to_token, keys + key_pe, queries + point_embedding, queries)
        keys = block.norm4(keys + attended)
    attended = _token_to_image(transformer.final_attn_token_to_image, queries + point_embedding, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attended), keys


def _upscaled_masks(decoder, keys: torch.Tensor, high_res_1, high_res_0, hyper_in: torch.Tensor) -> torch.Tensor:
    """``hyper_in @ output_upscaling(keys)`` with the high-resolution features: [1,K,4G,4G] from keys [1,N,C]."""
    dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
    c1, c2 = dc1.weight.shape[1], dc2.weight.shape[1]
    w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.weight.shape[0], -1)  # [C, (a, b, c1)]
    w2 = dc2.weight.permute(0, 2, 3, 1).reshape(c1, -1)  # [c1, (a, b, c2)]
    upscaled = (keys.squeeze(0) @ w1 + high_res_1).reshape(-1, c1)  # [4N, c1]
    upscaled = act1(F.layer_norm(upscaled, (c1,), ln1.weight, ln1.bias, ln1.eps))  # LayerNorm2d = over channels
    upscaled = act2((upscaled @ w2 + high_res_0).reshape(-1, c2))  # [16N, c2]
    logits = upscaled @ hyper_in.squeeze(0).transpose(0, 1)  # [16N, K]
    grid, k = math.isqrt(keys.shape[1]), logits.shape[1]
    blocks = logits.reshape(grid, grid, 2, 2, 2, 2, k).permute(6, 0, 2, 4, 1, 3, 5)  # (K, i, a, c, j, b, d)
    return blocks.reshape(1, k, 4 * grid, 4 * grid)


def predict_masks(decoder, prepared, image_pe, sparse_prompt_embeddings):
    """``MaskDecoder.predict_masks(..., repeat_image=False, high_res_features=...)`` (batch 1) from
    :func:`prepare_image`'s tensors: masks and IoU predictions."""
    if not decoder.use_high_res_features:
        raise ValueError("the ONNX decoder needs a mask decoder with high-resolution features (sam3's has them)")
    s = 1 if decoder.pred_obj_scores else 0
    weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    if decoder.pred_obj_scores:
        weights.insert(0, decoder.obj_score_token.weight)
    tokens = torch.cat([torch.cat(weights, dim=0).unsqueeze(0), sparse_prompt_embeddings], dim=1)
    hs, keys = two_way_transformer(decoder.transformer, prepared, image_pe, tokens)
    mask_tokens_out = hs[:, s + 1 : (s + 1 + decoder.num_mask_tokens), :]
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    masks = _upscaled_masks(decoder, keys, prepared[4], prepared[5], hyper_in)
    return masks, decoder.iou_prediction_head(hs[:, s, :])
