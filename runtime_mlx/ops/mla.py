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

from ..registry import implements
from .moe import GQAMoELayer
from .transformer import Lin, Norm, Rope, _ref, place


@implements("MLA_Layer")
class MLALayer(GQAMoELayer):
    def _init_attention(self, p, n):
        D, H, c, r = p.D, p.num_heads, p.kv_lora_rank, p.qk_rope_head_dim
        self.H, self.nope, self.r, self.c, self.vd = H, p.qk_nope_head_dim, r, c, p.v_head_dim
        qk = self.nope + r
        if p.q_lora_rank is None:
            _ref(self, q=place(self, n("q"), Lin(H * qk, D, False)), q_a=None)
        else:
            _ref(self, q=None, q_a=place(self, n("q_a"), Lin(p.q_lora_rank, D, p.mla_bias)),
                 q_a_norm=place(self, n("q_a_norm"), Norm(p.q_lora_rank, "rmsnorm", p.latent_norm_eps)),
                 q_b=place(self, n("q_b"), Lin(H * qk, p.q_lora_rank, False)))
        _ref(self, kv_a=place(self, n("kv_a"), Lin(c + r, D, p.mla_bias)),
             kv_a_norm=place(self, n("kv_a_norm"), Norm(c, "rmsnorm", p.latent_norm_eps)),
             kv_b=place(self, n("kv_b"), Lin(H * (self.nope + self.vd), c, False)),
             o=place(self, n("o"), Lin(D, H * self.vd, p.mla_bias)))
        self.scale = p.attn_scale if p.attn_scale is not None else qk ** -0.5
        self.window, self.causal, self.rope, self.rd = None, True, "1d", r
        self.theta, self.interleave = p.rope_theta, p.rope_interleave
        _ref(self, rot=Rope(p.rope_theta, r, p.rope_scaling))

    def _rotate(self, x, pos: int):
        """RoPE on x (B, h, T, r) at positions pos.. with the shared rotary rows (runtime_common/rope.py frequencies,
        times the attention factor): rotate-half pairs (x_i, x_{i + r/2}) or, interleaved, transformers'
        apply_rotary_pos_emb_interleave ([evens | odds] out). Both are [x1 cos - x2 sin | x2 cos + x1 sin]."""
        h = self.r // 2
        cos, sin = self.rot.rows(pos, x.shape[2], x.dtype)                  # (T, r) each
        cos, sin = cos[:, :h], sin[:, :h]
        x1, x2 = (x[..., 0::2], x[..., 1::2]) if self.interleave else (x[..., :h], x[..., h:])
        return mx.concatenate((x1 * cos - x2 * sin, x2 * cos + x1 * sin), axis=-1)

    def _attention(self, h, cache):
        B, T, _ = h.shape
        H, n, r, c = self.H, self.nope, self.r, self.c
        q = self.q(h) if self.q is not None else self.q_b(self.q_a_norm(self.q_a(h)))
        q = q.reshape(B, T, H, n + r).transpose(0, 2, 1, 3)                  # (B, H, T, n + r)
        ckv = self.kv_a(h)                                                   # (B, T, c + r)
        latent = self.kv_a_norm(ckv[..., :c]).reshape(B, 1, T, c)            # (B, 1, T, c)
        k_r = ckv[..., c:].reshape(B, 1, T, r)                               # (B, 1, T, r)
        pos = cache.seen if cache is not None else 0
        q = mx.concatenate((q[..., :n], self._rotate(q[..., n:], pos)), axis=-1)
        k_r = self._rotate(k_r, pos)
        n_cached = 0
        if cache is not None:
            if cache.k is not None:
                n_cached = cache.k.shape[2]
                latent = mx.concatenate((cache.k, latent), axis=2)           # (B, 1, S, c)
                k_r = mx.concatenate((cache.v, k_r), axis=2)                 # (B, 1, S, r)
            cache.k, cache.v = latent, k_r
        S = latent.shape[2]
        kv = self.kv_b(latent[:, 0]).reshape(B, S, H, n + self.vd).transpose(0, 2, 1, 3)   # (B, H, S, n + v)
        k = mx.concatenate((kv[..., :n], mx.broadcast_to(k_r, (B, H, S, r))), axis=-1)    # (B, H, S, n + r)
        mask = self._mask(T, S, pos, n_cached)
        y = mx.fast.scaled_dot_product_attention(q, k, kv[..., n:], scale=self.scale, mask=mask)   # (B, H, T, v)
        return self.o(y.transpose(0, 2, 1, 3).reshape(B, T, H * self.vd))  # (B, T, D)
