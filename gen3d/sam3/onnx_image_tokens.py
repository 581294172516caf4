"""The image tokens of SAM's two-way transformer during a click, never materialized: factored over the embedding's.

A click changes the N = G*G image tokens ``X`` (N x C) in every layer, but only by low-rank terms and per-token
LayerNorms: each image -> token attention adds ``P M`` (P: N x H*T attention probabilities, M: H*T x C) and each
LayerNorm scales and shifts each row. So every layer's tokens have the form

    X = scale[:, None] * (X0 * gain) + basis @ coeffs

with X0 the embedding's tokens (``image_embed`` + the dense prompt: no-mask or ``mask_input``'s) less each token's
mean (a LayerNorm removes it: kept, it would cancel in float32 where tokens' means are large against their spread)
and gain the product of the LayerNorms' weights so far, fixed by the model. A product ``X @ W`` for a fixed weight W
is ``scale * ((X0 * gain) @ W) + basis @ (coeffs @ W)``: the first
product is the embedding's (made once, :func:`prepared_projections`), the second costs N x R x C' with R ~ 2*H*T
instead of N x C x C'. A LayerNorm needs each row's mean and variance, which follow from the same factors and from
the embedding's row sums and squares (prepared). The function is the same as sam3's up to float32 rounding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

# what prepared_projections makes (in this order). Per-head projections are stored head-major, [H*N, d] (rows: head,
# then token), so that every attention reads them without a transpose.
PROJECTION_NAMES = (
    "upscale",  # (X0 * g1 * g2) @ W of the first transposed convolution [N, 4 * C1], centred (centred_blocks)
    "row_stats",  # [N, 8] per-token sums (ROW_STATS)
    "layer0_keys",  # the first layer's token -> image keys of the tokens + pe, bias included (not centred)
    "layer0_values",  # ... and values of the tokens
    "layer0_queries",  # the first layer's image -> token queries of the tokens + pe, bias included
    "layer0_out",  # X0 @ W_o of the first image -> token attention: the cross terms of the first LayerNorm
    "layer1_keys",  # (X0 * g1) @ W^T for the second layer's projections, g1 the first LayerNorm's gain
    "layer1_values",
    "layer1_queries",
    "layer1_out_first",  # (X0 * g1^2) @ W_o of the first attention: the cross terms of the second LayerNorm
    "layer1_out",  # (X0 * g1) @ W_o of the second attention: the same
    "final_keys",  # (X0 * g1 * g2) @ W^T for the final token -> image attention
    "final_values",
    "layer1_keys_pe",  # pe @ W^T: the positional encoding's part of keys and queries
    "layer1_queries_pe",
    "final_keys_pe",
)
ROW_STATS = (
    "square",  # |X0|^2 (X0 is centred)
    "out_bias_first",  # X0 . b_o of the first attention
    "gain_mean",  # mean(X0 * g1)
    "gain_centered_square",  # |X0 * g1 - mean(X0 * g1)|^2
    "gain2_out_bias_first",  # (X0 * g1^2) . b_o of the first attention
    "gain_gamma",  # (X0 * g1) . g1
    "gain_beta",  # (X0 * g1) . beta1
    "gain_out_bias",  # (X0 * g1) . b_o of the second attention
)


class Factored(NamedTuple):
    """Image tokens ``scale[:, None] * (X0 * gain) + basis @ coeffs``; the gain is the caller's to know."""

    scale: torch.Tensor  # [N]
    basis: torch.Tensor  # [N, R]
    coeffs: torch.Tensor  # [R, C]

    def project(self, prepared: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``X @ weight`` [N, m] for weight [C, m], given ``prepared = (X0 * gain) @ weight``."""
        return self.scale.unsqueeze(1) * prepared + self.basis @ (self.coeffs @ weight)


def head_major(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, H*d] -> [H*N, d]: the prepared layout of a per-head projection."""
    n = x.shape[0]
    return x.reshape(n, heads, -1).transpose(0, 1).reshape(heads * n, -1)


def heads_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[H*N, d] -> [H, N, d] (no copy)."""
    return x.reshape(heads, -1, x.shape[1])


def attention_parts(attn) -> tuple[int, int]:
    """Heads and the per-head width of a sam3 ``Attention``."""
    return attn.num_heads, attn.internal_dim // attn.num_heads


def _per_head(coeffs_weight: torch.Tensor, heads: int) -> torch.Tensor:
    """[R, H*d] -> [H, R, d]."""
    return coeffs_weight.reshape(coeffs_weight.shape[0], heads, -1).transpose(0, 1)


def conv_transpose_matrix(conv) -> torch.Tensor:
    """A 2x2 stride-2 ``ConvTranspose2d``'s weight as a matrix [C_in, (a, b, C_out)]: one token's 2x2 block."""
    return conv.weight.permute(0, 2, 3, 1).reshape(conv.weight.shape[0], -1)


def centred_blocks(x: torch.Tensor, channels: int) -> torch.Tensor:
    """x [..., (blocks, channels)] with each block's channels less their mean: the centring of a LayerNorm over
    those channels, which commutes with sums, folded into each term of one (a weight, a prepared product)."""
    blocks = x.reshape(*x.shape[:-1], -1, channels)
    return (blocks - blocks.mean(dim=-1, keepdim=True)).reshape(x.shape)


def _token_heads(attn, projection, tokens: torch.Tensor, scaled: bool) -> torch.Tensor:
    """``projection`` (one of ``attn``'s) of tokens [1, T, C] per head, [H, T, d]; ``scaled``: by 1/sqrt(d)."""
    heads, d = attention_parts(attn)
    projected = projection(tokens.squeeze(0))
    if scaled:
        projected = projected / math.sqrt(d)
    return projected.reshape(tokens.shape[1], heads, d).transpose(0, 1)


def _token_queries(attn, q: torch.Tensor) -> torch.Tensor:
    """The tokens' queries per head, scaled by 1/sqrt(d): [H, T, d] for q [1, T, C]."""
    return _token_heads(attn, attn.q_proj, q, scaled=True)


def _token_output(attn, pooled: torch.Tensor) -> torch.Tensor:
    """out_proj of per-head outputs [H, T, d]: [1, T, C]."""
    heads, t, d = pooled.shape
    return attn.out_proj(pooled.transpose(0, 1).reshape(1, t, heads * d))


def token_to_projected_image(attn, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``attn(q=q, ...)`` for q [1,T,C] tokens against image tokens already projected (biases included): keys,
    values [H*N, d] head-major."""
    heads, _ = attention_parts(attn)
    qh = _token_queries(attn, q)
    probs = torch.softmax(torch.matmul(qh, heads_view(keys, heads).transpose(1, 2)), dim=-1)  # [H, T, N]
    return _token_output(attn, torch.matmul(probs, heads_view(values, heads)))


def token_to_image(attn, q: torch.Tensor, x: Factored, keys_x, keys_pe, values_x) -> torch.Tensor:
    """``attn(q, k=X + pe, v=X)`` for q [1,T,C] tokens: ``keys_x``/``values_x`` the prepared (X0 * gain) @ W_k/W_v^T,
    ``keys_pe`` = pe @ W_k^T, all head-major; the keys' bias adds a constant per query row, which the softmax
    cancels."""
    heads, d = attention_parts(attn)
    t = q.shape[1]
    qh = _token_queries(attn, q)  # [H, T, d]
    scale = x.scale.reshape(1, 1, -1)
    scores = scale * torch.matmul(qh, heads_view(keys_x, heads).transpose(1, 2))  # [H, T, N]
    scores = scores + torch.matmul(qh, heads_view(keys_pe, heads).transpose(1, 2))
    fold = torch.matmul(qh, _per_head(x.coeffs @ attn.k_proj.weight.t(), heads).transpose(1, 2))  # [H, T, R]
    scores = scores + torch.matmul(fold.reshape(heads * t, -1), x.basis.t()).reshape(heads, t, -1)
    probs = torch.softmax(scores, dim=-1)
    pooled = torch.matmul(probs * scale, heads_view(values_x, heads))  # [H, T, d]
    low_rank = torch.matmul(probs.reshape(heads * t, -1), x.basis).reshape(heads, t, -1)  # [H, T, R]
    pooled = pooled + torch.matmul(low_rank, _per_head(x.coeffs @ attn.v_proj.weight.t(), heads))
    return _token_output(attn, pooled + attn.v_proj.bias.reshape(heads, 1, d))


def mixed_values(attn, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For image -> token attention over tokens k/v [1,T,C]: keys per head [H,T,d] scaled by 1/sqrt(d), values
    per head [H,T,d], and ``v_h W_o,h + b_o / H`` stacked [H*T, C] (each head's probabilities sum to 1, so the
    output's bias is spread over the heads)."""
    heads, d = attention_parts(attn)
    kh = _token_heads(attn, attn.k_proj, k, scaled=True)
    vh = _token_heads(attn, attn.v_proj, v, scaled=False)
    wo = attn.out_proj.weight.reshape(-1, heads, d).permute(1, 2, 0)  # [H, d, C]
    mixed = torch.matmul(vh, wo).reshape(heads * k.shape[1], -1) + attn.out_proj.bias / heads
    return kh, vh, mixed


def image_to_token_probs(queries: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """Softmax over the tokens per head, [H, N, T], for image queries [H, N, d] (head-major prepared, biases
    included) and the tokens' keys kh [H, T, d]."""
    return torch.softmax(torch.matmul(queries, kh.transpose(1, 2)), dim=-1)


def factored_image_to_token_probs(attn, x: Factored, queries_x, queries_pe, kh: torch.Tensor) -> torch.Tensor:
    """:func:`image_to_token_probs` for the queries of ``x + pe``: ``queries_x`` = (X0 * gain) @ W_q^T and
    ``queries_pe`` = pe @ W_q^T, head-major."""
    heads = kh.shape[0]
    keys_t = kh.transpose(1, 2)  # [H, d, T]
    scores = x.scale.reshape(1, -1, 1) * torch.matmul(heads_view(queries_x, heads), keys_t)  # [H, N, T]
    scores = scores + torch.matmul(heads_view(queries_pe, heads), keys_t)
    fold = torch.matmul(_per_head(x.coeffs @ attn.q_proj.weight.t(), heads), keys_t)  # [H, R, T]
    t = kh.shape[1]
    # one flat product and a transpose: onnxruntime-web's broadcast batched product takes ~2x as long
    low_rank = (x.basis @ fold.transpose(0, 1).reshape(-1, heads * t)).reshape(-1, heads, t).transpose(0, 1)
    bias = torch.matmul(attn.q_proj.bias.reshape(heads, 1, -1), keys_t)  # [H, 1, T]
    return torch.softmax(scores + low_rank + bias, dim=-1)


def as_basis(probs: torch.Tensor) -> torch.Tensor:
    """[H, N, T] -> [N, H*T]: the columns that multiply ``mixed_values``' rows."""
    heads, n, t = probs.shape
    return probs.transpose(0, 1).reshape(n, heads * t)


def out_cross(out_x: torch.Tensor, probs: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    """Per token, (X0 * gain) . (the attention's output without its bias): ``out_x`` = (X0 * gain) @ W_o
    head-major, probs [H, N, T], values vh [H, T, d]. [N]"""
    heads = probs.shape[0]
    return (probs * torch.matmul(heads_view(out_x, heads), vh.transpose(1, 2))).sum(dim=(0, 2))


def _row_squares(x: Factored, parts: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """|basis @ coeffs|^2 per row [N], as basis G basis^T with the Gram G = coeffs coeffs^T. ``parts``: the basis's
    columns as two tensors [u1 u2] (the basis their concatenation); then G's symmetry spares the block below its
    diagonal, u1 . (u1 G11) + u2 . (basis [2 G12; G22]): 66^2 + 130 * 64 instead of 130^2 multiply-adds a row."""
    gram = x.coeffs @ x.coeffs.t()
    if parts is None:
        return ((x.basis @ gram) * x.basis).sum(dim=1)
    first, second = parts
    k = first.shape[1]
    upper = (first @ gram[:k, :k]) * first
    lower = (x.basis @ torch.cat([2 * gram[:k, k:], gram[k:, k:]])) * second
    return upper.sum(dim=1) + lower.sum(dim=1)


def layer_norm(norm, x: Factored, gain_mean, gain_square, cross, parts=None):
    """``norm`` (a LayerNorm) of the tokens ``x`` (of ``gain``): ``gain_mean`` = mean(X0 * gain) (None: 0),
    ``gain_square`` = |X0 * gain - gain_mean|^2 per token, ``cross`` = sum_r x.basis[:, r] * ((X0 * gain) @
    x.coeffs^T)[:, r]; ``parts``: x.basis's columns as two tensors, where it is their concatenation
    (:func:`_row_squares`). Returns the result (of gain ``gain * norm.weight``), 1/sigma and the mean per token.
    Variances are taken about ``scale * gain_mean``."""
    channels = x.coeffs.shape[1]
    low_sum = (x.basis @ x.coeffs.sum(dim=1, keepdim=True)).squeeze(1)  # the row sums of basis @ coeffs
    shift = low_sum / channels  # mean - scale * gain_mean
    gram = _row_squares(x, parts)
    centered = cross if gain_mean is None else cross - gain_mean * low_sum
    variance = (x.scale * x.scale * gain_square + 2 * x.scale * centered + gram) / channels - shift * shift
    inv = torch.rsqrt(variance.clamp(min=0) + norm.eps)  # rounding can take a row's ~0 variance below 0
    mean = shift if gain_mean is None else x.scale * gain_mean + shift
    one = torch.ones_like(inv).unsqueeze(1)
    basis = torch.cat([x.basis * inv.unsqueeze(1), (-mean * inv).unsqueeze(1), one], dim=1)
    coeffs = torch.cat([x.coeffs * norm.weight, norm.weight.unsqueeze(0), norm.bias.unsqueeze(0)], dim=0)
    return Factored(x.scale * inv, basis, coeffs), inv, mean


def prepared_projections(decoder, tokens: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The embedding's products of :data:`PROJECTION_NAMES` from its tokens [N, C] and the positional encoding
    pe [N, C]."""
    first, second = decoder.transformer.layers
    final = decoder.transformer.final_attn_token_to_image
    g1, beta1 = first.norm4.weight, first.norm4.bias
    g12 = g1 * second.norm4.weight
    to_image0, to_token0 = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    to_image1, to_token1 = second.cross_attn_token_to_image, second.cross_attn_image_to_token
    out0, out1 = to_token0.out_proj, to_token1.out_proj
    centred = tokens - tokens.mean(dim=1, keepdim=True)  # X0
    x1, x12 = centred * g1, centred * g12
    gain_mean = x1.mean(dim=1, keepdim=True)
    stats = torch.cat(
        [
            (centred**2).sum(dim=1, keepdim=True),
            centred @ out0.bias.unsqueeze(1),
            gain_mean,
            ((x1 - gain_mean) ** 2).sum(dim=1, keepdim=True),
            (x1 * g1) @ out0.bias.unsqueeze(1),
            x1 @ g1.unsqueeze(1),
            x1 @ beta1.unsqueeze(1),
            x1 @ out1.bias.unsqueeze(1),
        ],
        dim=1,
    )
    per_head = [
        to_image0.k_proj(tokens + pe),
        to_image0.v_proj(tokens),
        to_token0.q_proj(tokens + pe),
        centred @ out0.weight,
        x1 @ to_image1.k_proj.weight.t(),
        x1 @ to_image1.v_proj.weight.t(),
        x1 @ to_token1.q_proj.weight.t(),
        (x1 * g1) @ out0.weight,
        x1 @ out1.weight,
        x12 @ final.k_proj.weight.t(),
        x12 @ final.v_proj.weight.t(),
        pe @ to_image1.k_proj.weight.t(),
        pe @ to_token1.q_proj.weight.t(),
        pe @ final.k_proj.weight.t(),
    ]
    heads = to_image0.num_heads
    dc1 = decoder.output_upscaling[0]
    upscale = centred_blocks(x12 @ conv_transpose_matrix(dc1), dc1.weight.shape[1])
    return (upscale, stats, *(head_major(p, heads) for p in per_head))
