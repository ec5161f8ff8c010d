"""Torch implementations of `compiler/ops/generative.py`: AdaLNZeroBlock, FlowMatchingHead, VQVAEDecoder.

The computations are those of the op docstrings (AdaLNZeroBlock: DiT's `DiTBlock`, attention through
F.scaled_dot_product_attention). Shapes: B batch, N tokens, D input width, F hidden width, C latent channels (of
the VQ decoder) or conditioning width (of AdaLNZeroBlock), K codes, h x w the latent grid, H heads, hs head size.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from compiler.ops.generative import AdaLNZeroBlock as AdaLNZeroOp
from compiler.ops.generative import adaln_zero_weights

from ..registry import implements
from .transformer import ACT, Box, Lin, place
from .vision import _Named


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim): [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim/2)), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]                                     # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)                # (B, dim)


def adaln_zero(t, x, c, heads: int, act, eps: float = 1e-6):
    """One DiT block with adaLN-Zero over tokens x (B, N, D) and the condition c (B, C); `t(name)` returns the
    block's tensor `name` (a declared name of `adaln_zero_weights`, or None for an absent bias)."""
    B, N, D = x.shape
    mod = F.linear(F.silu(c), t("adaLN_modulation.1.weight"), t("adaLN_modulation.1.bias"))[:, None]   # (B, 1, 6D)
    shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)                               # (B, 1, D)
    h = F.layer_norm(x, (D,), eps=eps) * (1 + scale1) + shift1
    qkv = F.linear(h, t("attn.qkv.weight"), t("attn.qkv.bias"))
    q, k, v = qkv.view(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)                  # (B, H, N, hs) each
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)            # (B, N, D)
    x = x + gate1 * F.linear(y, t("attn.proj.weight"), t("attn.proj.bias"))
    h = F.layer_norm(x, (D,), eps=eps) * (1 + scale2) + shift2
    h = act(F.linear(h, t("mlp.fc1.weight"), t("mlp.fc1.bias")))                            # (B, N, F)
    return x + gate2 * F.linear(h, t("mlp.fc2.weight"), t("mlp.fc2.bias"))                  # (B, N, D)


class _Block(_Named):
    """The declared tensors of one AdaLN-Zero block; `get(name)` is None for a tensor it does not declare."""

    def get(self, name: str):
        try:
            return self.t(name)
        except KeyError:
            return None


@implements("AdaLNZeroBlock")
class AdaLNZeroBlock(_Block):
    def __init__(self, p, in_types):
        super().__init__(AdaLNZeroOp.weights(p))
        self.heads, self.act = p.num_heads, ACT[p.mlp]

    def forward(self, x, c):
        return adaln_zero(self.get, x, c, self.heads, self.act)


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
        self.dit = p.block == "adaln_zero"
        self.heads = p.num_heads
        for _ in range(p.num_blocks if not self.dit else 0):
            b = Box()
            b.mlp = Box()
            b.mlp.fc1, b.mlp.fc2 = Lin(Fw, Fw, True), Lin(Fw, Fw, True)
            if self.adaln:
                b.ada = Lin(3 * Fw, Fw, True)
            self.blocks.append(b)
        if self.dit:
            self.blocks.extend(_Block(adaln_zero_weights(Fw, Fw, p.ff_dim)) for _ in range(p.num_blocks))
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
            if self.dit:
                h = adaln_zero(b.get, h, c[:, 0], self.heads, ACT["gelu_tanh"])
            elif self.adaln:
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
