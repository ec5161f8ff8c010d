"""MLX implementations of `compiler/ops/generative.py` (mirror of `runtime_torch/ops/generative.py`):
FlowMatchingHead, VQVAEDecoder.

The computations are those of the op docstrings. VQVAEDecoder keeps its maps channels-last (B, h, w, c) inside, with
channels-last kernels (`layout.py`); its input and output are (B, C, h, w) as in the graph. Shapes: B batch,
N tokens, D input width, F hidden width, C latent channels, K codes, h x w the latent grid.
"""
from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx
from mlx import nn

from compiler.ops.generative import VQVAEDecoder as VQOp

from ..registry import implements
from .transformer import Box, Lin, _ref, place


def timestep_embedding(t: mx.array, dim: int, max_period: float = 10000.0) -> mx.array:
    """(B,) -> (B, dim): [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim/2)), computed in float32."""
    half = dim // 2
    freqs = mx.exp(-math.log(max_period) * mx.arange(half, dtype=mx.float32) / half)
    args = t.astype(mx.float32)[:, None] * freqs[None]                          # (B, dim/2)
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)                # (B, dim)


@implements("FlowMatchingHead")
class FlowMatchingHead(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        D, Fw = p.in_dim, p.hidden_dim
        self.freq_dim, self.time_scale, self.adaln = p.freq_dim, p.time_scale, p.conditioning == "adaln"
        self.time_embed = Box()
        self.time_embed.fc1, self.time_embed.fc2 = Lin(Fw, p.freq_dim, True), Lin(Fw, Fw, True)
        self.in_proj = Lin(Fw, D, True)
        self.blocks = []
        for _ in range(p.depth):
            b = Box()
            b.mlp = Box()
            b.mlp.fc1, b.mlp.fc2 = Lin(Fw, Fw, True), Lin(Fw, Fw, True)
            if self.adaln:
                b.ada = Lin(3 * Fw, Fw, True)
            self.blocks.append(b)
        if self.adaln:
            self.final_ada = Lin(2 * Fw, Fw, True)
        self.out_proj = Lin(p.out_dim, Fw, True)

    def __call__(self, x, t: Optional[mx.array] = None):
        """x (B, N, D); t (B,) in [0, 1]: the wired `time` input, or this keyword when the spec wires none."""
        if t is None:
            raise TypeError("FlowMatchingHead needs the flow time t (B,): wire a scalar input to it, or call the "
                            "module with t=...")
        e = timestep_embedding(t * self.time_scale, self.freq_dim).astype(x.dtype)   # (B, freq)
        c = self.time_embed.fc2(nn.silu(self.time_embed.fc1(e)))[:, None]      # (B, 1, F)
        h = self.in_proj(x)                                                     # (B, N, F)
        ln = lambda z: mx.fast.layer_norm(z, None, None, 1e-6)                 # noqa: E731
        if not self.adaln:
            h = h + c
        for b in self.blocks:
            if self.adaln:
                shift, scale, gate = mx.split(b.ada(nn.silu(c)), 3, axis=-1)    # (B, 1, F) each
                h = h + gate * b.mlp.fc2(nn.silu(b.mlp.fc1(ln(h) * (1 + scale) + shift)))
            else:
                h = h + b.mlp.fc2(nn.silu(b.mlp.fc1(ln(h))))
        if self.adaln:
            shift, scale = mx.split(self.final_ada(nn.silu(c)), 2, axis=-1)
            return self.out_proj(ln(h) * (1 + scale) + shift)                   # (B, N, out)
        return self.out_proj(ln(h))


@implements("VQVAEDecoder")
class VQVAEDecoder(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.quantize = p.codebook_size is not None and p.quantize
        if p.codebook_size is not None:
            place(self, "codebook.weight", param=(p.codebook_size, p.in_channels))
        convs = VQOp.convs(p)                                                   # (name, in, out, upsample)
        for name, cin, cout, _ in convs:
            place(self, name + ".weight", param=(cout, 3, 3, cin))              # MLX layout (O, kh, kw, I)
            place(self, name + ".bias", param=(cout,))
        _ref(self, convs=convs)

    def module(self, name: str) -> nn.Module:
        m = self
        for part in name.split("."):
            m = m[int(part)] if isinstance(m, list) else m[part]
        return m

    def nearest_code(self, z):
        """(B, h, w, C) -> the nearest codebook vector at every position."""
        E = self["codebook"]["weight"]                                          # (K, C)
        B, h, w, C = z.shape
        flat = z.reshape(-1, C)                                                 # (B*h*w, C)
        d = (flat * flat).sum(1, keepdims=True) - 2 * flat @ E.T + (E * E).sum(1)[None]   # (B*h*w, K)
        return E[mx.argmin(d, axis=1)].reshape(B, h, w, C)                      # (B, h, w, C)

    def __call__(self, z):
        x = z.transpose(0, 2, 3, 1)                                             # (B, h, w, C)
        if self.quantize:
            x = self.nearest_code(x)
        for i, (name, _, _, up) in enumerate(self.convs):
            m = self.module(name)
            if up:
                x = mx.repeat(mx.repeat(nn.silu(x), 2, axis=1), 2, axis=2)      # nearest x2: (B, 2h, 2w, c)
            elif name == "conv_out" and i:
                x = nn.silu(x)
            x = mx.conv2d(x, m["weight"], padding=1) + m["bias"]
        return x.transpose(0, 3, 1, 2)                                          # (B, 3, h*2^s, w*2^s)
