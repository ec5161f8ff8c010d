"""MLX implementation of `compiler/ops/resampler.py` (mirror of `runtime_torch/ops/resampler.py`):
PerceiverResampler (Flamingo).

Shapes: B batch, N media tokens, L latents, D width, H heads, hs head size, F MLP width.
"""
from __future__ import annotations

import mlx.core as mx

from ..kernels import attend, dense, gelu, norm
from ..node import Node
from ..registry import implements


@implements("PerceiverResampler")
class PerceiverResampler(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.keep(p=p, stack=tuple(self.at(f"layers.{i}") for i in range(p.num_layers)), proj=self.at("media_proj"))

    def layer(self, b, x, lat):
        """One layer: latents attend to [media, latents], then an MLP; x (B, N, D), lat (B, L, D)."""
        B, L, _ = lat.shape
        H, hs, eps = self.p.num_heads, self.p.head_dim, self.p.norm_eps
        m, n = norm(x, b.norm_media, "layernorm", eps), norm(lat, b.norm_latents, "layernorm", eps)
        kv = mx.concatenate([m, n], axis=1)                                     # (B, N+L, D)
        heads = lambda t: t.reshape(B, t.shape[1], H, hs).transpose(0, 2, 1, 3)   # noqa: E731 (B, H, *, hs)
        q, k, v = heads(dense(n, b.attn.q_proj)), heads(dense(kv, b.attn.k_proj)), heads(dense(kv, b.attn.v_proj))
        y = attend(q, k, v, scale=self.p.scale)   # (B, H, L, hs)
        lat = lat + dense(y.transpose(0, 2, 1, 3).reshape(B, L, H * hs), b.attn.o_proj)
        return lat + dense(gelu(dense(norm(lat, b.ff_norm, "layernorm", eps), b.mlp.fc1)), b.mlp.fc2)   # (B, L, D)

    def __call__(self, media):
        x = dense(media, self.proj) if self.proj is not None else media         # (B, N, D)
        lat = mx.broadcast_to(self.latents, (x.shape[0],) + tuple(self.latents.shape))   # (B, L, D)
        for b in self.stack:
            lat = self.layer(b, x, lat)
        return norm(lat, self["norm"], "layernorm", self.p.norm_eps)           # (B, L, D)
