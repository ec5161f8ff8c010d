"""Torch implementation of TransformerBlock (compiler/ops/transformer.py), every variant its params allow.

    x = x + ls1 * post_attn_norm(mixer(norm1(x)))       mixer: attention (full / sliding) or LFM2 short convolution
    x = x + ls2 * post_mlp_norm(ffn(norm2(x)))          ffn: plain or gated MLP (GQA_MoE_Layer: experts, moe.py)
(post norms only with `post_norms`, LayerScale only with `layer_scale`). The reference behaviour, bit for bit
where the summation order allows, is transformers 5.x: llama (RoPE, GQA), gemma3 (offset RMSNorm, q/k norm, sandwich
norms, sliding mask `q - W < k <= q`, local RoPE base, query_pre_attn_scalar), lfm2 (ShortConv), siglip, dinov2
(LayerScale), dinov3_vit (2-D RoPE on patch tokens).

Parameters live at the names of the block's naming family (compiler/ops/naming.py), so the state-dict keys are the
op's declared weights. Attention runs through F.scaled_dot_product_attention.

Decoding: `forward(x, cache=None)`. A `LayerCache` (one per layer, made empty by the caller) holds what the layer
needs to continue a sequence: `seen` tokens so far (the RoPE position of x's first token), and K, V (B, kv, S, hs)
after q/k norm and RoPE (sliding layers keep the last window - 1 positions, all a later query can see) or, for conv
layers, the last kernel - 1 inputs of the convolution (B, D, K-1).
Shape vocabulary: B batch, T tokens of this call, S cached + new keys, D width, H heads, kv key/value heads,
hs head size, F MLP width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from compiler.ops.naming import name_of
from compiler.ops.transformer import GATED

from ..registry import implements

ACT = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu, "silu": F.silu,
       "swiglu": F.silu, "geglu": F.gelu, "geglu_tanh": lambda x: F.gelu(x, approximate="tanh")}


@dataclass
class LayerCache:
    """Decode state of one layer (see the module docstring); starts empty."""

    seen: int = 0
    k: Optional[torch.Tensor] = None       # (B, kv, S, hs)
    v: Optional[torch.Tensor] = None       # (B, kv, S, hs)
    conv: Optional[torch.Tensor] = None    # (B, D, K-1)


# --- leaves --------------------------------------------------------------------------------------------------------
class Box(nn.Module):
    """A plain module on the path to a parameter (`self_attn` in `self_attn.q_proj.weight`)."""


class Lin(nn.Module):
    def __init__(self, n_out: int, n_in: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Norm(nn.Module):
    """LayerNorm, or RMSNorm as transformers computes it (float32; offset 0 casts before the weight, Gemma after)."""

    def __init__(self, dim: int, kind: str, eps: float, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim)) if kind == "layernorm" else None
        self.kind, self.eps, self.offset, self.shape = kind, eps, offset, (dim,)

    def forward(self, x):
        if self.kind == "layernorm":
            return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset == 0.0:
            return self.weight * h.to(x.dtype)
        return (h * (self.offset + self.weight.float())).to(x.dtype)


class DepthwiseConv(nn.Module):
    """The weights of a depthwise Conv1d, (D, 1, K) and (D,); applied causally by the block."""

    def __init__(self, dim: int, kernel: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel))
        self.bias = nn.Parameter(torch.empty(dim)) if bias else None


def place(root: nn.Module, path: str, mod: Optional[nn.Module] = None, param: Optional[tuple] = None):
    """Install `mod` (or a bare parameter of shape `param`) at dotted `path` under root, creating Boxes."""
    *parts, last = path.split(".")
    m = root
    for part in parts:
        if part not in m._modules:
            m._modules[part] = Box()
        m = m._modules[part]
    if mod is not None:
        m._modules[last] = mod
        return mod
    m.register_parameter(last, nn.Parameter(torch.empty(param)))
    return (m, last)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x, cos, sin, rd: int):
    """Rotate-half RoPE on the first rd dims of the last axis (x (B, H, N, hs); cos, sin (N, rd))."""
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    xr, xp = x[..., :rd], x[..., rd:]
    return torch.cat((xr * cos + rotate_half(xr) * sin, xp), dim=-1)


def grid_angles(grid, rd: int, theta: float) -> torch.Tensor:
    """DINOv3's 2-D RoPE angles (h*w, rd): patch centres in [-1, 1], layout [y | x | y | x] of rd/4 frequencies."""
    h, w = grid
    inv = 1 / theta ** torch.arange(0, 1, 4 / rd, dtype=torch.float32)                 # (rd/4,)
    cy = torch.arange(0.5, h, dtype=torch.float32) / h
    cx = torch.arange(0.5, w, dtype=torch.float32) / w
    coords = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).flatten(0, 1) * 2.0 - 1.0   # (h*w, 2) (y, x)
    ang = 2 * math.pi * coords[:, :, None] * inv[None, None, :]                          # (h*w, 2, rd/4)
    return ang.flatten(1, 2).tile(2)                                                     # (h*w, rd)


# --- the block -----------------------------------------------------------------------------------------------------
@implements("TransformerBlock")
class TransformerBlock(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.p = p
        n = lambda role: name_of(p.names, role)  # noqa: E731
        D = p.D
        self.kind = p.layer_type
        norm = lambda: Norm(D, p.norm, p.norm_eps, p.norm_offset)  # noqa: E731
        self._keep("norm1", n("norm1"), norm())
        if self.kind == "conv":
            self._keep("conv_in", n("conv_in"), Lin(3 * D, D, p.conv_bias))
            self._keep("dwconv", n("conv"), DepthwiseConv(D, p.conv_kernel, p.conv_bias))
            self._keep("conv_out", n("conv_out"), Lin(D, D, p.conv_bias))
        else:
            self._init_attention(p, n)
        post = p.post_norms
        self._keep("post_attn_norm", n("post_attn_norm") if post else None, norm() if post else None)
        self._keep("norm2", n("norm2"), norm())
        self._init_ffn(p, n)
        self._keep("post_mlp_norm", n("post_mlp_norm") if post else None, norm() if post else None)
        self._keep("ls", None, None)
        if p.layer_scale is not None:
            self._keep("ls", None, (place(self, n("ls1"), param=(D,)), place(self, n("ls2"), param=(D,))))

    def _keep(self, attr: str, path, mod):
        """Install `mod` at its checkpoint path and keep a handle `self.<attr>` that is not a second registration
        (a registered attribute would add its tensors to the state dict twice); mod None or a tuple: a plain handle."""
        if mod is not None and path is not None:
            mod = place(self, path, mod)
        object.__setattr__(self, attr, mod)
        return mod

    # --- construction ----------------------------------------------------------------------------------------------
    def _init_attention(self, p, n):
        D, hd, kvd = p.D, p.head_dim, p.kv * p.head_dim
        self.H, self.KV, self.hd = p.num_heads, p.kv, hd
        if p.fused_qkv:
            self._keep("qkv", n("qkv"), Lin(3 * p.inner, D, "q" in p.attn_bias))
        else:
            self._keep("qkv", None, None)
            self._keep("q", n("q"), Lin(p.inner, D, "q" in p.attn_bias))
            self._keep("k", n("k"), Lin(kvd, D, "k" in p.attn_bias))
            self._keep("v", n("v"), Lin(kvd, D, "v" in p.attn_bias))
        self._keep("o", n("o"), Lin(D, p.inner, "o" in p.attn_bias))
        if p.qk_norm:
            self._keep("q_norm", n("q_norm"), Norm(hd, "rmsnorm", p.norm_eps, p.norm_offset))
            self._keep("k_norm", n("k_norm"), Norm(hd, "rmsnorm", p.norm_eps, p.norm_offset))
        else:
            self._keep("q_norm", None, None)
            self._keep("k_norm", None, None)
        self.scale = p.attn_scale if p.attn_scale is not None else hd ** -0.5
        self.window = p.sliding_window if self.kind == "sliding_attention" else None
        self.causal = p.causal
        self.rope, self.rd = p.rope, p.rope_dim or hd
        self.theta = p.rope_theta_local if (self.window and p.rope_theta_local) else p.rope_theta
        self.grid, self.prefix = p.rope_grid, p.rope_prefix

    def _init_ffn(self, p, n):
        D, Fw = p.D, p.ff_dim
        self.act = ACT[p.mlp]
        if p.mlp in GATED:
            self._keep("gate", n("gate"), Lin(Fw, D, p.mlp_bias))
            self._keep("up", n("up"), Lin(Fw, D, p.mlp_bias))
            self._keep("down", n("down"), Lin(D, Fw, p.mlp_bias))
        else:
            self._keep("gate", None, None)
            self._keep("fc1", n("fc1"), Lin(Fw, D, p.mlp_bias))
            self._keep("fc2", n("fc2"), Lin(D, Fw, p.mlp_bias))

    # --- forward ---------------------------------------------------------------------------------------------------
    def forward(self, x, cache: Optional[LayerCache] = None):
        h = self.norm1(x)
        y = self._conv(h, cache) if self.kind == "conv" else self._attention(h, cache)
        if cache is not None:
            cache.seen += x.shape[1]
        if self.post_attn_norm is not None:
            y = self.post_attn_norm(y)
        if self.ls is not None:
            y = y * getattr(*self.ls[0])
        x = x + y
        y = self.ffn(self.norm2(x))
        if self.post_mlp_norm is not None:
            y = self.post_mlp_norm(y)
        if self.ls is not None:
            y = y * getattr(*self.ls[1])
        return x + y

    def ffn(self, h):
        if self.gate is not None:
            return self.down(self.act(self.gate(h)) * self.up(h))           # (B, T, F) -> (B, T, D)
        return self.fc2(self.act(self.fc1(h)))

    def _attention(self, h, cache):
        B, T, _ = h.shape
        if self.qkv is not None:
            q, k, v = self.qkv(h).split(self.H * self.hd, dim=-1)
        else:
            q, k, v = self.q(h), self.k(h), self.v(h)
        q = q.view(B, T, self.H, self.hd)                                    # (B, T, H, hs)
        k = k.view(B, T, self.KV, self.hd)                                   # (B, T, kv, hs)
        v = v.view(B, T, self.KV, self.hd).transpose(1, 2)                   # (B, kv, T, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)                          # (B, H, T, hs), (B, kv, T, hs)
        pos = cache.seen if cache is not None else 0
        if self.rope == "1d":
            # tables in float32 whatever the compute dtype, cos/sin cast to it (as transformers)
            inv = 1.0 / (self.theta ** (torch.arange(0, self.rd, 2, device=h.device, dtype=torch.float) / self.rd))
            t = torch.arange(pos, pos + T, device=h.device, dtype=torch.float)
            freqs = t[:, None] * inv[None, :]                                # (T, rd/2)
            emb = torch.cat((freqs, freqs), dim=-1)                          # (T, rd)
            cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
            q, k = apply_rope(q, cos, sin, self.rd), apply_rope(k, cos, sin, self.rd)
        elif self.rope == "2d":
            ang = grid_angles(self.grid, self.rd, self.theta).to(h.device)   # (h*w, rd)
            cos, sin = ang.cos().to(h.dtype), ang.sin().to(h.dtype)
            n0 = self.prefix
            q = torch.cat((q[:, :, :n0], apply_rope(q[:, :, n0:], cos, sin, self.rd)), dim=2)
            k = torch.cat((k[:, :, :n0], apply_rope(k[:, :, n0:], cos, sin, self.rd)), dim=2)
        n_cached = 0
        if cache is not None:
            if cache.k is not None:
                n_cached = cache.k.shape[2]
                k = torch.cat((cache.k, k), dim=2)                           # (B, kv, S, hs)
                v = torch.cat((cache.v, v), dim=2)
            keep = k.shape[2] if self.window is None else min(k.shape[2], self.window - 1)
            cache.k, cache.v = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]
        mask, is_causal = self._mask(T, k.shape[2], pos, n_cached, h.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
                                           enable_gqa=self.KV != self.H)     # (B, H, T, hs)
        return self.o(y.transpose(1, 2).reshape(B, T, self.H * self.hd))     # (B, T, D)

    def _mask(self, T: int, S: int, pos: int, n_cached: int, device):
        """(mask or None, is_causal) for T queries at positions pos.. over S keys at positions pos - n_cached.."""
        W = self.window
        if W is None and not self.causal:
            return None, False
        if self.causal and (W is None or W >= S) and (T == 1 or n_cached == 0):
            return None, n_cached == 0     # plain causal; one query after a cache sees every key (no symbolic T test)
        q = torch.arange(pos, pos + T, device=device)[:, None]               # (T, 1)
        k = torch.arange(pos - n_cached, pos - n_cached + S, device=device)[None, :]   # (1, S)
        if self.causal:
            keep = k <= q
            if self.window is not None:
                keep = keep & (k > q - self.window)
        else:
            keep = (q - k).abs() < self.window
        return keep, False                                                   # (T, S) True = attend

    def _conv(self, h, cache):
        """LFM2 ShortConv: in_proj -> B, C, x; B*x; depthwise causal conv (no bias by default); C*; out_proj."""
        K = self.dwconv.weight.shape[-1]
        Bg, Cg, xg = self.conv_in(h).transpose(-1, -2).chunk(3, dim=-2)      # 3 x (B, D, T)
        u = Bg * xg                                                          # (B, D, T)
        if cache is None or cache.conv is None:
            past = u.new_zeros(u.shape[0], u.shape[1], K - 1)                # (B, D, K-1)
        else:
            past = cache.conv
        full = torch.cat((past, u), dim=-1)                                  # (B, D, K-1+T)
        if cache is not None:
            cache.conv = full[..., full.shape[-1] - (K - 1):]
        y = F.conv1d(full, self.dwconv.weight, self.dwconv.bias, groups=u.shape[1])   # (B, D, T)
        return self.conv_out((Cg * y).transpose(-1, -2))                     # (B, T, D)
