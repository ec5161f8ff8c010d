"""Torch implementation of MLA_Layer (compiler/ops/mla.py): multi-head latent attention + GQA_MoE_Layer's FFN.

As transformers 5.x DeepseekV3Attention: q from the low-rank path q_b(norm(q_a(x))) (or q_proj), split per head
into n pass-through and r rotated dims; [c | k_r] = kv_a(x), c normalised; RoPE on q_r and k_r (interleaved pairs
by default: the rotated halves come out as [evens | odds], in q and k alike, so the scores are unchanged); keys and
values are expanded from the latent by kv_b. Decoding caches the latent, not the expanded keys and values: the
`LayerCache` holds c (B, 1, S, c) in its K buffer and k_r (B, 1, S, r) in its V buffer, kv_lora_rank +
qk_rope_head_dim elements per token (the compiler's decode-state rule), and every call expands all cached positions.
Shape vocabulary: B batch, T tokens of this call, S cached + new positions, H heads, n / r / v the pass-through,
rotated and value dims per head, c the latent width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import RopeTable, dense, norm
from ..registry import implements
from .moe import GQAMoELayer


def rotate(x, cos, sin, interleave: bool):
    """RoPE on x (B, h, T, r) with cos, sin (T, r/2): rotate-half pairs (x_i, x_{i + r/2}), or, interleaved,
    transformers' apply_rotary_pos_emb_interleave: pairs (x0, x1), (x2, x3) ..., output [evens | odds]. Both are
    [x1 cos - x2 sin | x2 cos + x1 sin] of the two halves of the pairs."""
    h = x.shape[-1] // 2
    x1, x2 = (x[..., 0::2], x[..., 1::2]) if interleave else (x[..., :h], x[..., h:])
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@implements("MLA_Layer")
class MLALayer(GQAMoELayer):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)       # every handle kept: the latent roles, o, the norms, the FFN
        self.nope, self.r, self.c, self.vd = p.qk_nope_head_dim, p.qk_rope_head_dim, p.kv_lora_rank, p.v_head_dim

    def _latent_norm(self, x, m):
        return norm(x, m, "rmsnorm", self.p.latent_norm_eps)

    def _attention(self, h, cache):
        B, T, _ = h.shape
        H, n, r, c = self.H, self.nope, self.r, self.c
        q = dense(h, self.q) if self.q is not None else dense(self._latent_norm(dense(h, self.q_a), self.q_a_norm),
                                                              self.q_b)
        q = q.view(B, T, H, n + r).transpose(1, 2)                           # (B, H, T, n + r)
        latent, k_r = dense(h, self.kv_a).split((c, r), dim=-1)              # (B, T, c), (B, T, r)
        latent = self._latent_norm(latent, self.kv_a_norm).view(B, 1, T, c)   # (B, 1, T, c)
        k_r = k_r.view(B, 1, T, r)                                           # (B, 1, T, r)
        pos = cache.seen if cache is not None else 0
        cos, sin = RopeTable.rows(self.rot, pos, T, h)                       # (T, r) each, sin signed
        cos, sin = cos[:, :r // 2], sin[:, r // 2:]                          # one angle per pair (T, r/2)
        interleave = self.p.rope_interleave
        q = torch.cat((q[..., :n], rotate(q[..., n:], cos, sin, interleave)), dim=-1)
        k_r = rotate(k_r, cos, sin, interleave)
        n_cached = 0
        if cache is not None:
            n_cached = cache.n
            latent, k_r = cache.extend(latent, k_r, None)                    # (B, 1, S, c), (B, 1, S, r)
        S = latent.shape[2]
        kv = dense(latent[:, 0], self.kv_b).view(B, S, H, n + self.vd).transpose(1, 2)   # (B, H, S, n + v)
        k = torch.cat((kv[..., :n], k_r.expand(B, H, S, r)), dim=-1)         # (B, H, S, n + r)
        mask, is_causal = self._mask(T, S, pos, n_cached, h.device)
        y = F.scaled_dot_product_attention(q, k, kv[..., n:], attn_mask=mask, is_causal=is_causal,
                                           scale=self.p.scale)               # (B, H, T, v)
        return dense(y.transpose(1, 2).reshape(B, T, H * self.vd), self.o)   # (B, T, D)
