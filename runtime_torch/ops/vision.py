"""Torch implementations of `compiler/ops/vision.py`: PatchEmbed, AttentionPoolingHead, PixelShuffle, GridResample.

Numerics follow transformers (modeling_siglip, modeling_siglip2, modeling_dinov2, modeling_dinov3_vit) and
nanoVLM; tensor names and layouts are the op declarations' (`EMBED_NAMES`, `POOL_NAMES`): a dotted name such as
`patch_embeddings.projection.weight` is a parameter `weight` of the submodule `patch_embeddings.projection`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compiler.ops.vision import EMBED_NAMES, POOL_NAMES
from compiler.ops.vision import AttentionPoolingHead as PoolOp
from compiler.ops.vision import PatchEmbed as PatchEmbedOp

from ..activations import FUNCTIONS
from ..registry import implements


def _declare(root: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """Register an uninitialised parameter at the dotted `name` under `root`, making plain submodules on the way."""
    *path, attr = name.split(".")
    m = root
    for part in path:
        if part not in m._modules:
            m._modules[part] = nn.Module()
        m = m._modules[part]
    m.register_parameter(attr, nn.Parameter(torch.empty(shape)))


def _get(root: nn.Module, name: str) -> torch.Tensor:
    *path, attr = name.split(".")
    m = root
    for part in path:
        m = m._modules[part]
    return m._parameters[attr]


class _Named(nn.Module):
    """A module whose parameters are exactly a weight declaration {dotted name: W}."""

    def __init__(self, decl):
        super().__init__()
        for name, w in decl.items():
            _declare(self, name, tuple(w.shape))

    def t(self, name: str) -> torch.Tensor:
        return _get(self, name)


@implements("PatchEmbed")
class PatchEmbed(_Named):
    """(B, C, H, W) -> (B, prefix + h*w, D): patches (Conv2d, or Linear over (py, px, c)-flattened patches), plus
    positions (resized from pos_grid to the grid in float32 when they differ), then [CLS, registers, patches]."""

    def __init__(self, p, in_types):
        super().__init__(PatchEmbedOp.weights(p))
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
class AttentionPoolingHead(_Named):
    """SigLIP's MAP head: probe -> multi-head attention over x (packed q|k|v in_proj) -> out_proj = a;
    a + MLP(LayerNorm(a)); (B, N, D) -> (B, D)."""

    def __init__(self, p, in_types):
        super().__init__(PoolOp.weights(p))
        self.n = POOL_NAMES[p.names]
        self.D, self.nh, self.eps, self.act = p.embed_dim, p.num_heads, p.norm_eps, FUNCTIONS[p.mlp]

    def forward(self, x):
        n, D, nh = self.n, self.D, self.nh
        B, N, _ = x.shape
        hs = D // nh
        w, b = self.t(n["in_proj"] + "weight"), self.t(n["in_proj"] + "bias")
        probe = self.t(n["probe"]).expand(B, 1, D)
        q = F.linear(probe, w[:D], b[:D]).view(B, 1, nh, hs).transpose(1, 2)               # (B, nh, 1, hs)
        k = F.linear(x, w[D:2 * D], b[D:2 * D]).view(B, N, nh, hs).transpose(1, 2)         # (B, nh, N, hs)
        v = F.linear(x, w[2 * D:], b[2 * D:]).view(B, N, nh, hs).transpose(1, 2)           # (B, nh, N, hs)
        att = torch.softmax((q @ k.transpose(-1, -2)) * hs ** -0.5, dim=-1)                  # (B, nh, 1, N)
        a = (att @ v).transpose(1, 2).reshape(B, 1, D)                                       # (B, 1, D)
        a = F.linear(a, self.t(n["out"] + ".weight"), self.t(n["out"] + ".bias"))
        h = F.layer_norm(a, (D,), self.t(n["norm"] + ".weight"), self.t(n["norm"] + ".bias"), self.eps)
        h = F.linear(self.act(F.linear(h, self.t(n["fc1"] + ".weight"), self.t(n["fc1"] + ".bias"))),
                     self.t(n["fc2"] + ".weight"), self.t(n["fc2"] + ".bias"))
        return (a + h)[:, 0]                                                                 # (B, D)


@implements("PixelShuffle")
class PixelShuffle(nn.Module):
    """nanoVLM's order: (B, h*w, D) -> (B, h, w, D) -> (B, h/s, s, w/s, s, D) -> permute (0, 1, 3, 2, 4, 5)
    -> (B, (h/s)*(w/s), D*s*s)."""

    def __init__(self, p, in_types):
        super().__init__()
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
class GridResample(nn.Module):
    """(B, prefix + h*w, D) -> (B, prefix + H*W, D): bilinear (align_corners False, no antialias) or area
    (adaptive average pooling) over the grid; prefix tokens pass through."""

    def __init__(self, p, in_types):
        super().__init__()
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
