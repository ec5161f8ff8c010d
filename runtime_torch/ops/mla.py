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

from ..registry import implements
from .moe import GQAMoELayer
from .transformer import Lin, Norm, Rope, RopeTable


def rotate(x, cos, sin, interleave: bool):
    """RoPE on x (B, h, T, r) with cos, sin (T, r/2): rotate-half pairs (x_i, x_{i + r/2}), or, interleaved,
    transformers' apply_rotary_pos_emb_interleave: pairs (x0, x1), (x2, x3) ..., output [evens | odds]. Both are
    [x1 cos - x2 sin | x2 cos + x1 sin] of the two halves of the pairs."""
    h = x.shape[-1] // 2
    x1, x2 = (x[..., 0::2], x[..., 1::2]) if interleave else (x[..., :h], x[..., h:])
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@implements("MLA_Layer")
class MLALayer(GQAMoELayer):
    def _init_attention(self, p, n):
        D, H, c, r = p.D, p.num_heads, p.kv_lora_rank, p.qk_rope_head_dim
        self.H, self.nope, self.r, self.c, self.vd = H, p.qk_nope_head_dim, r, c, p.v_head_dim
        qk = self.nope + r
        self._keep("qkv", None, None)
        self._keep("k", None, None)         # no k / v projections: pack() leaves the attention alone
        self._keep("v", None, None)
        if p.q_lora_rank is None:
            self._keep("q", n("q"), Lin(H * qk, D, False))
            self._keep("q_a", None, None)
        else:
            self._keep("q", None, None)
            self._keep("q_a", n("q_a"), Lin(p.q_lora_rank, D, p.mla_bias))
            self._keep("q_a_norm", n("q_a_norm"), Norm(p.q_lora_rank, "rmsnorm", p.latent_norm_eps))
            self._keep("q_b", n("q_b"), Lin(H * qk, p.q_lora_rank, False))
        self._keep("kv_a", n("kv_a"), Lin(c + r, D, p.mla_bias))
        self._keep("kv_a_norm", n("kv_a_norm"), Norm(c, "rmsnorm", p.latent_norm_eps))
        self._keep("kv_b", n("kv_b"), Lin(H * (self.nope + self.vd), c, False))
        self._keep("o", n("o"), Lin(D, H * self.vd, p.mla_bias))
        self.scale = p.attn_scale if p.attn_scale is not None else qk ** -0.5
        self.window, self.causal, self.rope, self.rd = None, True, "1d", r
        self.theta, self.interleave = p.rope_theta, p.rope_interleave
        self.rot = Rope(p.rope_theta, r, p.rope_scaling)

    def _angles(self, pos: int, T: int, like):
        """cos, sin (T, r/2) of positions pos..: the shared rotary table's (runtime_common/rope.py frequencies of
        every scaling type, times the attention factor), one angle per pair."""
        cos, sin = RopeTable.rows(self.rot, pos, T, like)                    # (T, r) each, sin signed
        h = self.r // 2
        return cos[:, :h], sin[:, h:]

    def _attention(self, h, cache):
        B, T, _ = h.shape
        H, n, r, c = self.H, self.nope, self.r, self.c
        q = self.q(h) if self.q is not None else self.q_b(self.q_a_norm(self.q_a(h)))
        q = q.view(B, T, H, n + r).transpose(1, 2)                           # (B, H, T, n + r)
        latent, k_r = self.kv_a(h).split((c, r), dim=-1)                     # (B, T, c), (B, T, r)
        latent = self.kv_a_norm(latent).view(B, 1, T, c)                     # (B, 1, T, c)
        k_r = k_r.view(B, 1, T, r)                                           # (B, 1, T, r)
        pos = cache.seen if cache is not None else 0
        cos, sin = self._angles(pos, T, h)
        q = torch.cat((q[..., :n], rotate(q[..., n:], cos, sin, self.interleave)), dim=-1)
        k_r = rotate(k_r, cos, sin, self.interleave)
        n_cached = 0
        if cache is not None:
            n_cached = cache.n
            latent, k_r = cache.extend(latent, k_r, None)                    # (B, 1, S, c), (B, 1, S, r)
        S = latent.shape[2]
        kv = self.kv_b(latent[:, 0]).view(B, S, H, n + self.vd).transpose(1, 2)   # (B, H, S, n + v)
        k = torch.cat((kv[..., :n], k_r.expand(B, H, S, r)), dim=-1)         # (B, H, S, n + r)
        v = kv[..., n:]                                                      # (B, H, S, v)
        mask, is_causal = self._mask(T, S, pos, n_cached, h.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale)
        return self.o(y.transpose(1, 2).reshape(B, T, H * self.vd))          # (B, T, D)
