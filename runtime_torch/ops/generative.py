"""Torch implementations of `compiler/ops/generative.py`: FlowMatchingHead, VQVAEDecoder.

The computations are those of the op docstrings. Shapes: B batch, N tokens, D input width, F hidden width,
C latent channels, K codes, h x w the latent grid.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import implements
from ..node import Box, Lin, place


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim): [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim/2)), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]                                     # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)                # (B, dim)


@implements("FlowMatchingHead")
class FlowMatchingHead(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        D, Fw = p.in_dim, p.hidden_dim
        self.freq_dim, self.time_scale, self.adaln = p.freq_dim, p.time_scale, p.conditioning == "adaln"
        self.time_embed = Box()
        self.time_embed.fc1, self.time_embed.fc2 = Lin(Fw, p.freq_dim, True), Lin(Fw, Fw, True)
        self.in_proj = Lin(Fw, D, True)
        self.blocks = nn.ModuleList()
        for _ in range(p.num_blocks):
            b = Box()
            b.mlp = Box()
            b.mlp.fc1, b.mlp.fc2 = Lin(Fw, Fw, True), Lin(Fw, Fw, True)
            if self.adaln:
                b.ada = Lin(3 * Fw, Fw, True)
            self.blocks.append(b)
        self.final_ada = Lin(2 * Fw, Fw, True) if self.adaln else None
        self.out_proj = Lin(p.out_dim, Fw, True)
        self.width = Fw

    def forward(self, x, t: Optional[torch.Tensor] = None):
        """x (B, N, D); t (B,) in [0, 1]: the wired `time` input, or this keyword when the spec wires none."""
        if t is None:
            raise TypeError("FlowMatchingHead needs the flow time t (B,): wire a scalar input to it, or call the "
                            "module with t=...")
        e = timestep_embedding(t * self.time_scale, self.freq_dim).to(x.dtype)   # (B, freq)
        c = self.time_embed.fc2(F.silu(self.time_embed.fc1(e)))[:, None]        # (B, 1, F)
        h = self.in_proj(x)                                                     # (B, N, F)
        ln = lambda z: F.layer_norm(z, (self.width,), eps=1e-6)                # noqa: E731
        if not self.adaln:
            h = h + c
        for b in self.blocks:
            if self.adaln:
                shift, scale, gate = b.ada(F.silu(c)).chunk(3, dim=-1)           # (B, 1, F) each
                h = h + gate * b.mlp.fc2(F.silu(b.mlp.fc1(ln(h) * (1 + scale) + shift)))
            else:
                h = h + b.mlp.fc2(F.silu(b.mlp.fc1(ln(h))))
        if self.adaln:
            shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=-1)
            return self.out_proj(ln(h) * (1 + scale) + shift)                   # (B, N, out)
        return self.out_proj(ln(h))


@implements("VQVAEDecoder")
class VQVAEDecoder(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        from compiler.ops.generative import VQVAEDecoder as Op
        self.quantize = p.codebook_size is not None and p.quantize
        if p.codebook_size is not None:
            place(self, "codebook.weight", param=(p.codebook_size, p.in_channels))
        self.convs = Op.convs(p)                                                # (name, in, out, upsample)
        for name, cin, cout, _ in self.convs:
            place(self, name + ".weight", param=(cout, cin, 3, 3))
            place(self, name + ".bias", param=(cout,))

    def nearest_code(self, z):
        """(B, C, h, w) -> the nearest codebook vector at every position, straight-through for gradients."""
        E = self.codebook.weight                                                # (K, C)
        B, C, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)                             # (B*h*w, C)
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ E.t() + E.pow(2).sum(1)[None]   # (B*h*w, K)
        zq = E[d.argmin(dim=1)].reshape(B, h, w, C).permute(0, 3, 1, 2)          # (B, C, h, w)
        return z + (zq - z).detach()

    def module(self, name: str) -> nn.Module:
        m = self
        for part in name.split("."):
            m = m._modules[part]
        return m

    def forward(self, z):
        x = self.nearest_code(z) if self.quantize else z                        # (B, C, h, w)
        for i, (name, _, _, up) in enumerate(self.convs):
            m = self.module(name)
            if up:
                x = F.interpolate(F.silu(x), scale_factor=2.0, mode="nearest")   # (B, c, 2h, 2w)
            elif name == "conv_out" and i:
                x = F.silu(x)
            x = F.conv2d(x, m.weight, m.bias, padding=1)
        return x                                                                # (B, 3, h*2^s, w*2^s)
