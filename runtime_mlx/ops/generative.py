"""MLX implementations of `compiler/ops/generative.py` (mirror of `runtime_torch/ops/generative.py`):
AdaLNZeroBlock, FlowMatchingHead, VQVAEDecoder.

The computations are those of the op docstrings (AdaLNZeroBlock: DiT's `DiTBlock`, attention through
`mx.fast.scaled_dot_product_attention`). VQVAEDecoder keeps its maps channels-last (B, h, w, c) inside, with
channels-last kernels (`layout.py`); its input and output are (B, C, h, w) as in the graph.

Memory: MLX's CPU convolution unfolds its input (im2col, 9 x the input for a 3x3 kernel), and the nearest-code
search scores every position against every code. Where those buffers would exceed BAND_BYTES, the decoder works in
bands (rows of the map, chunks of positions), each evaluated before the next, so the transient stays near the
compiler's workspace figure (measured on omni_lite's 512 px decoder: 705 MB -> 185 MB for one 64-channel conv).
Shapes: B batch, N tokens, D input width, F hidden width, C latent channels (of the VQ decoder) or conditioning
width (of AdaLNZeroBlock), K codes, h x w the latent grid, H heads, hs head size.
"""
from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx
from mlx import nn

from compiler.ops.generative import VQVAEDecoder as VQOp

from ..kernels import ACT, attend, dense
from ..node import Node
from ..registry import implements

BAND_BYTES = 64 * 2 ** 20      # the largest im2col / distance buffer built at once


def conv3x3(x, w, b):
    """Same-padded 3x3 convolution of x (B, H, W, Cin) with w (O, 3, 3, Cin), in row bands when the unfolded input
    would exceed BAND_BYTES (each band evaluated before the next)."""
    B, H, W, C = x.shape
    rows = max(1, BAND_BYTES // max(1, B * W * 9 * C * x.itemsize))
    if rows >= H:
        return mx.conv2d(x, w, padding=1) + b
    xp = mx.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])                          # (B, H+2, W+2, Cin)
    bands = []
    for r in range(0, H, rows):
        y = mx.conv2d(xp[:, r:r + min(rows, H - r) + 2], w) + b                 # (B, rows, W, O)
        mx.eval(y)
        bands.append(y)
    return mx.concatenate(bands, axis=1)                                        # (B, H, W, O)


def timestep_embedding(t: mx.array, dim: int, max_period: float = 10000.0) -> mx.array:
    """(B,) -> (B, dim): [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim/2)), computed in float32."""
    half = dim // 2
    freqs = mx.exp(-math.log(max_period) * mx.arange(half, dtype=mx.float32) / half)
    args = t.astype(mx.float32)[:, None] * freqs[None]                          # (B, dim/2)
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)                # (B, dim)


def adaln_zero(blk: nn.Module, x, c, heads: int, act, eps: float = 1e-6):
    """One DiT block with adaLN-Zero over tokens x (B, N, D) and the condition c (B, C); `blk` holds the block's
    declared modules (attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1)."""
    B, N, D = x.shape
    mod = dense(nn.silu(c), blk["adaLN_modulation"]["1"])[:, None]                        # (B, 1, 6D)
    shift1, scale1, gate1, shift2, scale2, gate2 = mx.split(mod, 6, axis=-1)                # (B, 1, D) each
    h = mx.fast.layer_norm(x, None, None, eps) * (1 + scale1) + shift1
    qkv = dense(h, blk["attn"]["qkv"]).reshape(B, N, 3, heads, D // heads).transpose(2, 0, 3, 1, 4)  # (3,B,H,N,hs)
    y = attend(qkv[0], qkv[1], qkv[2], scale=(D // heads) ** -0.5)   # (B, H, N, hs)
    x = x + gate1 * dense(y.transpose(0, 2, 1, 3).reshape(B, N, D), blk["attn"]["proj"])    # (B, N, D)
    h = mx.fast.layer_norm(x, None, None, eps) * (1 + scale2) + shift2
    return x + gate2 * dense(act(dense(h, blk["mlp"]["fc1"])), blk["mlp"]["fc2"])          # (B, N, D)


@implements("AdaLNZeroBlock")
class AdaLNZeroBlock(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.keep(heads=p.num_heads, act=ACT[p.mlp])

    def __call__(self, x, c):
        return adaln_zero(self, x, c, self.heads, self.act)


@implements("FlowMatchingHead")
class FlowMatchingHead(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.freq_dim, self.time_scale, self.adaln = p.freq_dim, p.time_scale, p.conditioning == "adaln"
        self.keep(stack=tuple(self.at(f"blocks.{i}") for i in range(p.num_blocks)), dit=p.block == "adaln_zero",
                  heads=p.num_heads)

    def __call__(self, x, t: Optional[mx.array] = None):
        """x (B, N, D); t (B,) in [0, 1]: the wired `time` input, or this keyword when the spec wires none."""
        if t is None:
            raise TypeError("FlowMatchingHead needs the flow time t (B,): wire a scalar input to it, or call the "
                            "module with t=...")
        e = timestep_embedding(t * self.time_scale, self.freq_dim).astype(x.dtype)   # (B, freq)
        c = dense(nn.silu(dense(e, self.time_embed.fc1)), self.time_embed.fc2)[:, None]   # (B, 1, F)
        h = dense(x, self.in_proj)                                              # (B, N, F)
        ln = lambda z: mx.fast.layer_norm(z, None, None, 1e-6)                 # noqa: E731
        if not self.adaln:
            h = h + c
        for b in self.stack:
            mlp = lambda z: dense(nn.silu(dense(z, b.mlp.fc1)), b.mlp.fc2)      # noqa: E731
            if self.dit:
                h = adaln_zero(b, h, c[:, 0], self.heads, ACT["gelu_tanh"])
            elif self.adaln:
                shift, scale, gate = mx.split(dense(nn.silu(c), b.ada), 3, axis=-1)   # (B, 1, F) each
                h = h + gate * mlp(ln(h) * (1 + scale) + shift)
            else:
                h = h + mlp(ln(h))
        if self.adaln:
            shift, scale = mx.split(dense(nn.silu(c), self.final_ada), 2, axis=-1)
            return dense(ln(h) * (1 + scale) + shift, self.out_proj)           # (B, N, out)
        return dense(ln(h), self.out_proj)


@implements("VQVAEDecoder")
class VQVAEDecoder(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.quantize = p.codebook_size is not None and p.quantize
        self.keep(convs=[(self.at(name), name, up) for name, _, _, up in VQOp.convs(p)])   # (module, name, upsample)

    def nearest_code(self, z):
        """(B, h, w, C) -> the nearest codebook vector at every position (positions in chunks of BAND_BYTES of
        distances)."""
        E = self["codebook"]["weight"]                                          # (K, C)
        B, h, w, C = z.shape
        flat = z.reshape(-1, C)                                                 # (B*h*w, C)
        e2 = (E * E).sum(1)[None]                                               # (1, K)
        n = flat.shape[0]
        step = max(1, BAND_BYTES // (E.shape[0] * flat.itemsize))
        idx = []
        for s in range(0, n, step):
            f = flat[s:s + step]
            d = (f * f).sum(1, keepdims=True) - 2 * f @ E.T + e2                # (chunk, K)
            i = mx.argmin(d, axis=1)
            if step < n:
                mx.eval(i)
            idx.append(i)
        return E[mx.concatenate(idx)].reshape(B, h, w, C)                       # (B, h, w, C)

    def __call__(self, z):
        x = z.transpose(0, 2, 3, 1)                                             # (B, h, w, C)
        if self.quantize:
            x = self.nearest_code(x)
        for i, (m, name, up) in enumerate(self.convs):
            if up:
                B, h, w, c = x.shape                                            # nearest x2, one copy:
                x = mx.broadcast_to(nn.silu(x)[:, :, None, :, None], (B, h, 2, w, 2, c)).reshape(B, 2 * h, 2 * w, c)
            elif name == "conv_out" and i:
                x = nn.silu(x)
            x = conv3x3(x, m["weight"], m["bias"])
        return x.transpose(0, 3, 1, 2)                                          # (B, 3, h*2^s, w*2^s)
