"""Torch implementations of `compiler/ops/vision.py`: PatchEmbed, AttentionPoolingHead, PixelShuffle, GridResample.

Numerics follow transformers (modeling_siglip, modeling_siglip2, modeling_dinov2, modeling_dinov3_vit) and
nanoVLM; tensor names and layouts are the op declarations' (`EMBED_NAMES`, `POOL_NAMES`): a dotted name such as
`patch_embeddings.projection.weight` is a parameter `weight` of the submodule `patch_embeddings.projection`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from compiler.ops.vision import EMBED_NAMES, POOL_NAMES

from ..kernels import ACT
from ..node import Node
from ..registry import implements


@implements("PatchEmbed")
class PatchEmbed(Node):
    """(B, C, H, W) -> (B, prefix + h*w, D): patches (Conv2d, or Linear over (py, px, c)-flattened patches), plus
    positions (resized from pos_grid to the grid in float32 when they differ), then [CLS, registers, patches]."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        t = EMBED_NAMES[p.names]
        self.kind, self.P, self.D = p.kind, p.patch_size, p.embed_dim
        self.h, self.w = p.grid
        self.proj_w, self.proj_b = t["proj"] + ".weight", (t["proj"] + ".bias") if p.bias else None
        self.pos = t["pos"] if p.positions == "learned" else None
        self.pos_cls = int(p.pos_cls)
        self.pos_grid = tuple(p.pos_grid) if p.pos_grid else None
        self.mode, self.antialias = p.interpolate, p.antialias
        self.cls = t["cls"] if p.cls_token else None
        self.reg = t["registers"] if p.registers else None

    def positions(self) -> torch.Tensor:
        """The patch positions on the input's grid: (h*w, D)."""
        table = self.t(self.pos).reshape(-1, self.D)[self.pos_cls:]              # (ph*pw, D)
        if self.pos_grid == (self.h, self.w):
            return table
        ph, pw = self.pos_grid
        g = table.reshape(1, ph, pw, self.D).permute(0, 3, 1, 2).float()        # (1, D, ph, pw)
        g = F.interpolate(g, size=(self.h, self.w), mode=self.mode, align_corners=False, antialias=self.antialias)
        return g.permute(0, 2, 3, 1).reshape(self.h * self.w, self.D).to(table.dtype)   # (h*w, D)

    def forward(self, x):
        w = self.t(self.proj_w)
        b = self.t(self.proj_b) if self.proj_b else None
        B, P = x.shape[0], self.P
        x = x.to(w.dtype)
        if self.kind == "conv":
            t = F.conv2d(x, w, b, stride=P).flatten(2).transpose(1, 2)           # (B, h*w, D)
        else:
            C = x.shape[1]
            x = x.reshape(B, C, self.h, P, self.w, P).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, py, px, C)
            t = F.linear(x.reshape(B, self.h * self.w, P * P * C), w, b)        # (B, h*w, D)
        if self.pos:
            t = t + self.positions()
        parts = []
        if self.cls:
            c = self.t(self.cls).expand(B, -1, -1)                               # (B, 1, D)
            if self.pos_cls:
                c = c + self.t(self.pos).reshape(-1, self.D)[:1]
            parts.append(c)
        if self.reg:
            parts.append(self.t(self.reg).expand(B, -1, -1))                     # (B, R, D)
        return torch.cat(parts + [t], dim=1) if parts else t                    # (B, prefix + h*w, D)


@implements("AttentionPoolingHead")
class AttentionPoolingHead(Node):
    """SigLIP's MAP head: probe -> multi-head attention over x (packed q|k|v in_proj) -> out_proj = a;
    a + MLP(LayerNorm(a)); (B, N, D) -> (B, D)."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.n = POOL_NAMES[p.names]
        self.p, self.act = p, ACT[p.mlp]

    def forward(self, x):
        n, D, nh, hs = self.n, self.p.embed_dim, self.p.num_heads, self.p.head_dim
        B, N, _ = x.shape
        w, b = self.t(n["in_proj"] + "weight"), self.t(n["in_proj"] + "bias")
        probe = self.t(n["probe"]).expand(B, 1, D)
        q = F.linear(probe, w[:D], b[:D]).view(B, 1, nh, hs).transpose(1, 2)               # (B, nh, 1, hs)
        k = F.linear(x, w[D:2 * D], b[D:2 * D]).view(B, N, nh, hs).transpose(1, 2)         # (B, nh, N, hs)
        v = F.linear(x, w[2 * D:], b[2 * D:]).view(B, N, nh, hs).transpose(1, 2)           # (B, nh, N, hs)
        att = torch.softmax((q @ k.transpose(-1, -2)) * self.p.scale, dim=-1)                  # (B, nh, 1, N)
        a = (att @ v).transpose(1, 2).reshape(B, 1, D)                                       # (B, 1, D)
        a = F.linear(a, self.t(n["out"] + ".weight"), self.t(n["out"] + ".bias"))
        h = F.layer_norm(a, (D,), self.t(n["norm"] + ".weight"), self.t(n["norm"] + ".bias"), self.p.norm_eps)
        h = F.linear(self.act(F.linear(h, self.t(n["fc1"] + ".weight"), self.t(n["fc1"] + ".bias"))),
                     self.t(n["fc2"] + ".weight"), self.t(n["fc2"] + ".bias"))
        return (a + h)[:, 0]                                                                 # (B, D)


@implements("PixelShuffle")
class PixelShuffle(Node):
    """nanoVLM's order: (B, h*w, D) -> (B, h, w, D) -> (B, h/s, s, w/s, s, D) -> permute (0, 1, 3, 2, 4, 5)
    -> (B, (h/s)*(w/s), D*s*s)."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.s = p.factor
        self.h, self.w = in_types[0].grid

    def forward(self, x):
        B, _, D = x.shape
        s, h, w = self.s, self.h // self.s, self.w // self.s
        x = x.reshape(B, h, s, w, s, D)                                  # (B, h/s, s, w/s, s, D)
        x = x.permute(0, 1, 3, 2, 4, 5)                                  # (B, h/s, w/s, s, s, D)
        return x.reshape(B, h * w, s * s * D)                            # (B, (h/s)*(w/s), D*s*s)

    def extra_repr(self) -> str:
        return f"factor={self.s}, grid={self.h}x{self.w}"


@implements("GridResample")
class GridResample(Node):
    """(B, prefix + h*w, D) -> (B, prefix + H*W, D): bilinear (align_corners False, no antialias) or area
    (adaptive average pooling) over the grid; prefix tokens pass through."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        t = in_types[0]
        self.prefix, (self.h, self.w), self.size, self.mode = t.prefix, t.grid, tuple(p.size), p.mode

    def forward(self, x):
        pre, x = x[:, :self.prefix], x[:, self.prefix:]
        B, _, D = x.shape
        g = x.transpose(1, 2).reshape(B, D, self.h, self.w)             # (B, D, h, w)
        if self.mode == "area":
            g = F.adaptive_avg_pool2d(g, self.size)
        else:
            g = F.interpolate(g, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        g = g.flatten(2).transpose(1, 2)                                 # (B, H*W, D)
        return torch.cat([pre, g], dim=1) if self.prefix else g

    def extra_repr(self) -> str:
        return f"{self.h}x{self.w} -> {self.size[0]}x{self.size[1]}, {self.mode}"
