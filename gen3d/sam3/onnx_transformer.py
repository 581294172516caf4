"""SAM's mask decoder (sam3 0.1.4 ``MaskDecoder.predict_masks`` and its ``TwoWayTransformer``) with the
attention between the few prompt tokens (T, 8 for one click) and the image's N = G*G tokens reassociated: the same
function, about half the multiply-adds per click at G = 72.

sam3 projects every image token to keys, values or queries (N x 256 x 128 multiply-adds each) before attending to
T tokens. Products are associative, so per head h:

- token -> image: ``q_h (x W_k,h + b_k,h)^T = (q_h W_k,h) x^T + const`` (a constant per query row cancels in the
  softmax) and ``P_h (x W_v,h + b_v,h) = (P_h x) W_v,h + b_v,h`` (softmax rows sum to 1): N x 256 x 8T each;
- image -> token: ``(x W_q,h + b_q,h) k_h^T = x (W_q,h k_h^T) + b_q,h k_h^T`` and
  ``out_proj(concat_h A_h v_h) = sum_h A_h (v_h W_o,h) + b_o``: N x 256 x 8T each.

Cheaper while 8T < 128, i.e. up to 8 prompt points besides a box. Float32 rounding differs from sam3's order by
~1e-6 relative (the tests hold the masks to the server's, logits within 1e-4 of 0 aside).
"""

from __future__ import annotations

import math

import torch


def _token_to_image(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q=q, k=k, v=v)`` for q [1,T,C] tokens, k/v [1,N,C] image tokens, without projecting the image."""
    heads, head_dim = attn.num_heads, attn.internal_dim // attn.num_heads
    t = q.shape[1]
    qh = (attn.q_proj(q) / math.sqrt(head_dim)).reshape(t, heads, head_dim).transpose(0, 1)  # [H,T,d]
    wk = attn.k_proj.weight.reshape(heads, head_dim, -1)  # [H,d,C]
    scores = torch.matmul(torch.matmul(qh, wk).reshape(heads * t, -1), k.squeeze(0).transpose(0, 1))  # [H*T, N]
    probs = torch.softmax(scores, dim=-1)
    pooled = torch.matmul(probs, v.squeeze(0)).reshape(heads, t, -1)  # [H,T,C]
    wv = attn.v_proj.weight.reshape(heads, head_dim, -1)
    out = torch.matmul(pooled, wv.transpose(1, 2)) + attn.v_proj.bias.reshape(heads, 1, head_dim)  # [H,T,d]
    return attn.out_proj(out.transpose(0, 1).reshape(1, t, heads * head_dim))


def _image_to_token(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q=q, k=k, v=v)`` for q [1,N,C] image tokens, k/v [1,T,C] tokens, without projecting the image."""
    heads, head_dim = attn.num_heads, attn.internal_dim // attn.num_heads
    t = k.shape[1]
    kh = (attn.k_proj(k.squeeze(0)) / math.sqrt(head_dim)).reshape(t, heads, head_dim).transpose(0, 1)  # [H,T,d]
    wq = attn.q_proj.weight.reshape(heads, head_dim, -1)  # [H,d,C]
    folded = torch.matmul(wq.transpose(1, 2), kh.transpose(1, 2))  # [H,C,T]
    offset = torch.matmul(attn.q_proj.bias.reshape(heads, 1, head_dim), kh.transpose(1, 2))  # [H,1,T]
    n = q.shape[1]
    scores = torch.matmul(q.squeeze(0), folded.transpose(0, 1).reshape(-1, heads * t)) + offset.reshape(1, heads * t)
    probs = torch.softmax(scores.reshape(n, heads, t), dim=-1).reshape(n, heads * t)
    vh = attn.v_proj(v.squeeze(0)).reshape(t, heads, head_dim).transpose(0, 1)  # [H,T,d]
    wo = attn.out_proj.weight.reshape(-1, heads, head_dim).permute(1, 2, 0)  # [H,d,C]
    mixed = torch.matmul(vh, wo).reshape(heads * t, -1)  # [H*T, C]
    return (torch.matmul(probs, mixed) + attn.out_proj.bias).unsqueeze(0)


def two_way_transformer(transformer, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding):
    """``TwoWayTransformer.forward`` (batch 1) with the reassociated cross attentions."""
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = point_embedding
    for block in transformer.layers:
        if block.skip_first_layer_pe:
            queries = block.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + block.self_attn(q=q, k=q, v=queries)
        queries = block.norm1(queries)
        attended = _token_to_image(block.cross_attn_token_to_image, queries + point_embedding, keys + key_pe, keys)
        queries = block.norm2(queries + attended)
        queries = block.norm3(queries + block.mlp(queries))
        attended = _image_to_token(block.cross_attn_image_to_token, keys + key_pe, queries + point_embedding, queries)
        keys = block.norm4(keys + attended)
    attended = _token_to_image(transformer.final_attn_token_to_image, queries + point_embedding, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attended), keys


def predict_masks(decoder, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res):
    """``MaskDecoder.predict_masks(..., repeat_image=False, high_res_features=high_res)`` (batch 1): masks and
    IoU predictions."""
    s = 1 if decoder.pred_obj_scores else 0
    weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    if decoder.pred_obj_scores:
        weights.insert(0, decoder.obj_score_token.weight)
    tokens = torch.cat([torch.cat(weights, dim=0).unsqueeze(0), sparse_prompt_embeddings], dim=1)
    src = image_embeddings + dense_prompt_embeddings
    b, c, h, w = src.shape
    hs, src = two_way_transformer(decoder.transformer, src, image_pe, tokens)
    iou_token_out = hs[:, s, :]
    mask_tokens_out = hs[:, s + 1 : (s + 1 + decoder.num_mask_tokens), :]
    src = src.transpose(1, 2).reshape(b, c, h, w)
    if decoder.use_high_res_features:
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        feat_s0, feat_s1 = high_res
        upscaled = act1(ln1(dc1(src) + feat_s1))
        upscaled = act2(dc2(upscaled) + feat_s0)
    else:
        upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
    return masks, decoder.iou_prediction_head(iou_token_out)
