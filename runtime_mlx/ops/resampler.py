"""MLX implementation of `compiler/ops/resampler.py` (mirror of `runtime_torch/ops/resampler.py`):
PerceiverResampler (Flamingo).

Shapes: B batch, N media tokens, L latents, D width, H heads, hs head size, F MLP width.
"""
from __future__ import annotations

import mlx.core as mx
from mlx import nn

from ..registry import implements
from ..kernels import gelu
from ..node import Box, Lin, Norm


class _Layer(nn.Module):
    def __init__(self, p):
        super().__init__()
        D, inner, eps = p.embed_dim, p.inner, p.norm_eps
        self.norm_media, self.norm_latents, self.ff_norm = (Norm(D, "layernorm", eps) for _ in range(3))
        self.attn = Box()
        self.attn.q_proj, self.attn.k_proj, self.attn.v_proj = (Lin(inner, D, False) for _ in range(3))
        self.attn.o_proj = Lin(D, inner, False)
        self.mlp = Box()
        self.mlp.fc1, self.mlp.fc2 = Lin(p.ff_dim, D, False), Lin(D, p.ff_dim, False)
        self.H, self.hs = p.num_heads, p.head_dim

    def __call__(self, x, lat):
        B, L, _ = lat.shape
        m, n = self.norm_media(x), self.norm_latents(lat)
        kv = mx.concatenate([m, n], axis=1)                                     # (B, N+L, D)
        heads = lambda t: t.reshape(B, t.shape[1], self.H, self.hs).transpose(0, 2, 1, 3)   # noqa: E731 (B, H, *, hs)
        q, k, v = heads(self.attn.q_proj(n)), heads(self.attn.k_proj(kv)), heads(self.attn.v_proj(kv))
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.hs ** -0.5)   # (B, H, L, hs)
        lat = lat + self.attn.o_proj(y.transpose(0, 2, 1, 3).reshape(B, L, self.H * self.hs))
        return lat + self.mlp.fc2(gelu(self.mlp.fc1(self.ff_norm(lat))))       # (B, L, D)


@implements("PerceiverResampler")
class PerceiverResampler(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.latents = mx.zeros((p.num_latents, p.embed_dim))
        if p.kv_dim != p.embed_dim:
            self.media_proj = Lin(p.embed_dim, p.kv_dim, True)
        self.layers = [_Layer(p) for _ in range(p.num_layers)]
        self.norm = Norm(p.embed_dim, "layernorm", p.norm_eps)

    def __call__(self, media):
        x = self.media_proj(media) if "media_proj" in self else media          # (B, N, D)
        lat = mx.broadcast_to(self.latents, (x.shape[0],) + tuple(self.latents.shape))   # (B, L, D)
        for layer in self.layers:
            lat = layer(x, lat)
        return self.norm(lat)                                                   # (B, L, D)
