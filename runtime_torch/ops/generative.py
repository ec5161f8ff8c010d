"""Torch implementations of `compiler/ops/generative.py`: FlowMatchingHead, VQVAEDecoder.

The computations are those of the op docstrings. Shapes: B batch, N tokens, D input width, F hidden width,
C latent channels, K codes, h x w the latent grid.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from compiler.ops.generative import VQVAEDecoder as VQOp

from ..kernels import dense
from ..node import Node
from ..registry import implements


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim): [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim/2)), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]                                     # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)                # (B, dim)


@implements("FlowMatchingHead")
class FlowMatchingHead(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.freq_dim, self.time_scale, self.adaln = p.freq_dim, p.time_scale, p.conditioning == "adaln"
        self.keep(stack=tuple(self.at(f"blocks.{i}") for i in range(p.num_blocks)))

    def forward(self, x, t: Optional[torch.Tensor] = None):
        """x (B, N, D); t (B,) in [0, 1]: the wired `time` input, or this keyword when the spec wires none."""
        if t is None:
            raise TypeError("FlowMatchingHead needs the flow time t (B,): wire a scalar input to it, or call the "
                            "module with t=...")
        e = timestep_embedding(t * self.time_scale, self.freq_dim).to(x.dtype)   # (B, freq)
        c = dense(F.silu(dense(e, self.time_embed.fc1)), self.time_embed.fc2)[:, None]   # (B, 1, F)
        h = dense(x, self.in_proj)                                              # (B, N, F)
        ln = lambda z: F.layer_norm(z, (z.shape[-1],), eps=1e-6)               # noqa: E731
        if not self.adaln:
            h = h + c
        for b in self.stack:
            mlp = lambda z: dense(F.silu(dense(z, b.mlp.fc1)), b.mlp.fc2)       # noqa: E731
            if self.adaln:
                shift, scale, gate = dense(F.silu(c), b.ada).chunk(3, dim=-1)    # (B, 1, F) each
                h = h + gate * mlp(ln(h) * (1 + scale) + shift)
            else:
                h = h + mlp(ln(h))
        if self.adaln:
            shift, scale = dense(F.silu(c), self.final_ada).chunk(2, dim=-1)
            return dense(ln(h) * (1 + scale) + shift, self.out_proj)           # (B, N, out)
        return dense(ln(h), self.out_proj)


@implements("VQVAEDecoder")
class VQVAEDecoder(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.quantize = p.codebook_size is not None and p.quantize
        self.convs = [(self.at(name), name, up) for name, _, _, up in VQOp.convs(p)]   # (module, name, upsample)

    def nearest_code(self, z):
        """(B, C, h, w) -> the nearest codebook vector at every position, straight-through for gradients."""
        E = self.codebook.weight                                                # (K, C)
        B, C, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)                             # (B*h*w, C)
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ E.t() + E.pow(2).sum(1)[None]   # (B*h*w, K)
        zq = E[d.argmin(dim=1)].reshape(B, h, w, C).permute(0, 3, 1, 2)          # (B, C, h, w)
        return z + (zq - z).detach()

    def forward(self, z):
        x = self.nearest_code(z) if self.quantize else z                        # (B, C, h, w)
        for i, (m, name, up) in enumerate(self.convs):
            if up:
                x = F.interpolate(F.silu(x), scale_factor=2.0, mode="nearest")   # (B, c, 2h, 2w)
            elif name == "conv_out" and i:
                x = F.silu(x)
            x = F.conv2d(x, m.weight, m.bias, padding=1)
        return x                                                                # (B, 3, h*2^s, w*2^s)
