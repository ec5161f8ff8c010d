"""MLX implementations of `compiler/ops/vision.py` (mirror of `runtime_torch/ops/vision.py`): PatchEmbed,
AttentionPoolingHead, PixelShuffle, GridResample.

Numerics follow the torch runtime (transformers' siglip, siglip2, dinov2, dinov3_vit; nanoVLM). Resizes (position
tables, GridResample) are torch's F.interpolate / adaptive_avg_pool2d as fixed per-axis matrices (`resize.py`).
Tensor names are the op declarations' (`EMBED_NAMES`, `POOL_NAMES`); convolution kernels are channels-last
(`layout.py`).
"""
from __future__ import annotations

import mlx.core as mx

from compiler.ops.vision import EMBED_NAMES, POOL_NAMES

from .. import resize
from ..kernels import ACT, attend
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
        self.cls = t["cls"] if p.cls_token else None
        self.reg = t["registers"] if p.registers else None
        resized = self.pos is not None and tuple(p.pos_grid) != (self.h, self.w)
        self.keep(pos_grid=tuple(p.pos_grid) if p.pos_grid else None,
             mats=resize.matrices(tuple(p.pos_grid), (self.h, self.w), p.interpolate, p.antialias)
             if resized else None)

    def positions(self) -> mx.array:
        """The patch positions on the input's grid: (h*w, D)."""
        table = self.t(self.pos).reshape(-1, self.D)[self.pos_cls:]               # (ph*pw, D)
        if self.mats is None:
            return table
        ph, pw = self.pos_grid
        g = table.reshape(ph, pw, self.D).astype(mx.float32)                       # (ph, pw, D)
        g = resize.apply(g, *self.mats)                                            # (h, w, D)
        return g.reshape(self.h * self.w, self.D).astype(table.dtype)

    def __call__(self, x):
        w = self.t(self.proj_w)
        b = self.t(self.proj_b) if self.proj_b else None
        B, P = x.shape[0], self.P
        x = x.astype(w.dtype)
        if self.kind == "conv":
            t = mx.conv2d(x.transpose(0, 2, 3, 1), w, stride=P)                    # (B, h, w, D)
            t = t[:, :self.h, :self.w].reshape(B, self.h * self.w, self.D)        # (B, h*w, D)
        else:
            C = x.shape[1]
            x = x[:, :, :self.h * P, :self.w * P].reshape(B, C, self.h, P, self.w, P)
            x = x.transpose(0, 2, 4, 3, 5, 1).reshape(B, self.h * self.w, P * P * C)   # (B, h*w, (py, px, C))
            t = x @ w.T                                                            # (B, h*w, D)
        if b is not None:
            t = t + b
        if self.pos:
            t = t + self.positions()
        parts = []
        if self.cls:
            c = mx.broadcast_to(self.t(self.cls), (B, 1, self.D))                   # (B, 1, D)
            if self.pos_cls:
                c = c + self.t(self.pos).reshape(-1, self.D)[:1]
            parts.append(c)
        if self.reg:
            r = self.t(self.reg)
            parts.append(mx.broadcast_to(r, (B,) + tuple(r.shape[1:])))            # (B, R, D)
        return mx.concatenate(parts + [t], axis=1) if parts else t                 # (B, prefix + h*w, D)


@implements("AttentionPoolingHead")
class AttentionPoolingHead(Node):
    """SigLIP's MAP head: probe -> multi-head attention over x (packed q|k|v in_proj) -> out_proj = a;
    a + MLP(LayerNorm(a)); (B, N, D) -> (B, D)."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.keep(n=POOL_NAMES[p.names], act=ACT[p.mlp], p=p)

    def _lin(self, x, w, b):
        return x @ w.T + b

    def __call__(self, x):
        n, D, nh, hs = self.n, self.p.embed_dim, self.p.num_heads, self.p.head_dim
        B, N, _ = x.shape
        w, b = self.t(n["in_proj"] + "weight"), self.t(n["in_proj"] + "bias")
        probe = mx.broadcast_to(self.t(n["probe"]), (B, 1, D))
        q = self._lin(probe, w[:D], b[:D]).reshape(B, 1, nh, hs).transpose(0, 2, 1, 3)             # (B, nh, 1, hs)
        k = self._lin(x, w[D:2 * D], b[D:2 * D]).reshape(B, N, nh, hs).transpose(0, 2, 1, 3)       # (B, nh, N, hs)
        v = self._lin(x, w[2 * D:], b[2 * D:]).reshape(B, N, nh, hs).transpose(0, 2, 1, 3)         # (B, nh, N, hs)
        a = attend(q, k, v, scale=self.p.scale)                         # (B, nh, 1, hs)
        a = a.transpose(0, 2, 1, 3).reshape(B, 1, D)                                                 # (B, 1, D)
        a = self._lin(a, self.t(n["out"] + ".weight"), self.t(n["out"] + ".bias"))
        h = mx.fast.layer_norm(a, self.t(n["norm"] + ".weight"), self.t(n["norm"] + ".bias"), self.p.norm_eps)
        h = self._lin(self.act(self._lin(h, self.t(n["fc1"] + ".weight"), self.t(n["fc1"] + ".bias"))),
                      self.t(n["fc2"] + ".weight"), self.t(n["fc2"] + ".bias"))
        return (a + h)[:, 0]                                                                         # (B, D)


@implements("PixelShuffle")
class PixelShuffle(Node):
    """nanoVLM's order: (B, h*w, D) -> (B, h, w, D) -> (B, h/s, s, w/s, s, D) -> permute (0, 1, 3, 2, 4, 5)
    -> (B, (h/s)*(w/s), D*s*s)."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.s = p.factor
        self.h, self.w = in_types[0].grid

    def __call__(self, x):
        B, _, D = x.shape
        s, h, w = self.s, self.h // self.s, self.w // self.s
        x = x.reshape(B, h, s, w, s, D)                                  # (B, h/s, s, w/s, s, D)
        x = x.transpose(0, 1, 3, 2, 4, 5)                                # (B, h/s, w/s, s, s, D)
        return x.reshape(B, h * w, s * s * D)                            # (B, (h/s)*(w/s), D*s*s)


@implements("GridResample")
class GridResample(Node):
    """(B, prefix + h*w, D) -> (B, prefix + H*W, D): bilinear (align_corners False, no antialias) or area
    (adaptive average pooling) over the grid; prefix tokens pass through."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        t = in_types[0]
        self.prefix, (self.h, self.w) = t.prefix, t.grid
        self.H, self.W = p.size
        self.keep(mats=resize.matrices((self.h, self.w), (self.H, self.W), p.mode))

    def __call__(self, x):
        pre, x = x[:, :self.prefix], x[:, self.prefix:]
        B, _, D = x.shape
        g = resize.apply(x.reshape(B, self.h, self.w, D), *self.mats)   # (B, H, W, D)
        g = g.reshape(B, self.H * self.W, D)
        return mx.concatenate([pre, g], axis=1) if self.prefix else g
