"""Torch implementation of `compiler/ops/resampler.py`: PerceiverResampler (Flamingo).

Shapes: B batch, N media tokens, L latents, D width, H heads, hs head size, F MLP width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import implements
from ..node import Box, Lin


class _LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.empty(dim)), nn.Parameter(torch.empty(dim))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Layer(nn.Module):
    def __init__(self, p):
        super().__init__()
        D, inner, eps = p.embed_dim, p.inner, p.norm_eps
        self.norm_media, self.norm_latents, self.ff_norm = (_LayerNorm(D, eps) for _ in range(3))
        self.attn = Box()
        self.attn.q_proj, self.attn.k_proj, self.attn.v_proj = (Lin(inner, D, False) for _ in range(3))
        self.attn.o_proj = Lin(D, inner, False)
        self.mlp = Box()
        self.mlp.fc1, self.mlp.fc2 = Lin(p.ff_dim, D, False), Lin(D, p.ff_dim, False)
        self.H, self.hs = p.num_heads, p.head_dim

    def forward(self, x, lat):
        B, L, _ = lat.shape
        m, n = self.norm_media(x), self.norm_latents(lat)
        kv = torch.cat([m, n], dim=1)                                           # (B, N+L, D)
        heads = lambda t: t.view(B, t.shape[1], self.H, self.hs).transpose(1, 2)   # noqa: E731 (B, H, *, hs)
        q, k, v = heads(self.attn.q_proj(n)), heads(self.attn.k_proj(kv)), heads(self.attn.v_proj(kv))
        y = F.scaled_dot_product_attention(q, k, v)                             # (B, H, L, hs)
        lat = lat + self.attn.o_proj(y.transpose(1, 2).reshape(B, L, self.H * self.hs))
        return lat + self.mlp.fc2(F.gelu(self.mlp.fc1(self.ff_norm(lat))))      # (B, L, D)


@implements("PerceiverResampler")
class PerceiverResampler(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.latents = nn.Parameter(torch.empty(p.num_latents, p.embed_dim))
        self.media_proj = Lin(p.embed_dim, p.kv_dim, True) if p.kv_dim != p.embed_dim else None
        self.layers = nn.ModuleList(_Layer(p) for _ in range(p.num_layers))
        self.norm = _LayerNorm(p.embed_dim, p.norm_eps)

    def forward(self, media):
        x = self.media_proj(media) if self.media_proj is not None else media   # (B, N, D)
        lat = self.latents.expand(x.shape[0], -1, -1)                           # (B, L, D)
        for layer in self.layers:
            lat = layer(x, lat)
        return self.norm(lat)                                                   # (B, L, D)
