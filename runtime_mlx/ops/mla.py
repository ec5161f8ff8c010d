"""MLX implementation of MLA_Layer (compiler/ops/mla.py); mirror of `runtime_torch/ops/mla.py`.

Multi-head latent attention as transformers 5.x DeepseekV3Attention, GQA_MoE_Layer's feed-forward. RoPE on the r
rotated dims from runtime_common/rope.py's frequencies (yarn for DeepSeek-V3), interleaved or rotate-half as the
torch runtime. Decoding caches the latent, not the expanded keys and values: the `LayerCache` holds
c (B, 1, S, c) as `k` and the rotated k_r (B, 1, S, r) as `v`, kv_lora_rank + qk_rope_head_dim elements per token
(the compiler's decode-state rule); every call expands all cached positions through kv_b.
Shape vocabulary: B batch, T tokens of this call, S cached + new positions, H heads, n / r / v the pass-through,
rotated and value dims per head, c the latent width.
"""
from __future__ import annotations

import mlx.core as mx

from ..kernels import attend, dense, norm
from ..registry import implements
from .moe import GQAMoELayer


@implements("MLA_Layer")
class MLALayer(GQAMoELayer):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)       # every handle kept: the latent roles, o, the norms, the FFN
        self.nope, self.r, self.c, self.vd = p.qk_nope_head_dim, p.qk_rope_head_dim, p.kv_lora_rank, p.v_head_dim

    def _latent_norm(self, x, m):
        return norm(x, m, "rmsnorm", self.p.latent_norm_eps)

    def _rotate(self, x, pos: int):
        """RoPE on x (B, h, T, r) at positions pos.. with the shared rotary rows (runtime_common/rope.py frequencies,
        times the attention factor): rotate-half pairs (x_i, x_{i + r/2}) or, interleaved, transformers'
        apply_rotary_pos_emb_interleave ([evens | odds] out). Both are [x1 cos - x2 sin | x2 cos + x1 sin]."""
        h = self.r // 2
        cos, sin = self.rot.rows(pos, x.shape[2], x.dtype)                  # (T, r) each
        cos, sin = cos[:, :h], sin[:, :h]                                    # one angle per pair (T, r/2)
        x1, x2 = (x[..., 0::2], x[..., 1::2]) if self.p.rope_interleave else (x[..., :h], x[..., h:])
        return mx.concatenate((x1 * cos - x2 * sin, x2 * cos + x1 * sin), axis=-1)

    def _attention(self, h, cache):
        B, T, _ = h.shape
        H, n, r, c = self.H, self.nope, self.r, self.c
        q = dense(h, self.q) if self.q is not None else dense(self._latent_norm(dense(h, self.q_a), self.q_a_norm),
                                                              self.q_b)
        q = q.reshape(B, T, H, n + r).transpose(0, 2, 1, 3)                  # (B, H, T, n + r)
        ckv = dense(h, self.kv_a)                                            # (B, T, c + r)
        latent = self._latent_norm(ckv[..., :c], self.kv_a_norm).reshape(B, 1, T, c)   # (B, 1, T, c)
        k_r = ckv[..., c:].reshape(B, 1, T, r)                               # (B, 1, T, r)
        pos = cache.seen if cache is not None else 0
        q = mx.concatenate((q[..., :n], self._rotate(q[..., n:], pos)), axis=-1)
        k_r = self._rotate(k_r, pos)
        n_cached = 0
        if cache is not None:
            latent, k_r, n_cached = cache.extend(latent, k_r, None)          # (B, 1, S, c), (B, 1, S, r)
        S = latent.shape[2]
        kv = dense(latent[:, 0], self.kv_b).reshape(B, S, H, n + self.vd).transpose(0, 2, 1, 3)   # (B, H, S, n + v)
        k = mx.concatenate((kv[..., :n], mx.broadcast_to(k_r, (B, H, S, r))), axis=-1)    # (B, H, S, n + r)
        mask = self._mask(T, S, pos, n_cached)
        y = attend(q, k, kv[..., n:], scale=self.p.scale, mask=mask)   # (B, H, T, v)
        return dense(y.transpose(0, 2, 1, 3).reshape(B, T, H * self.vd), self.o)   # (B, T, D)
