"""MLX implementation of TransformerBlock (compiler/ops/transformer.py); mirror of `runtime_torch/ops/transformer.py`.

    x = x + ls1 * post_attn_norm(mixer(norm1(x)))       mixer: attention (full / sliding) or LFM2 short convolution
    x = x + ls2 * post_mlp_norm(ffn(norm2(x)))          ffn: plain or gated MLP (GQA_MoE_Layer: experts, moe.py)
The reference is the torch runtime (itself transformers 5.x): llama, gemma3 (offset RMSNorm, q/k norm, sandwich
norms, sliding mask `q - W < k <= q`, local RoPE base, query_pre_attn_scalar), gemma2 (soft-capped scores: an
explicit softmax, as the fused attention cannot cap), phi3 (fused q|k|v and gate|up), olmo2 (post norms only, q/k
norm over the whole projection), smollm3 (NoPE layers), lfm2 (ShortConv), siglip, dinov2 (LayerScale), dinov3 (2-D
RoPE on patch tokens). 1-D RoPE applies cos / sin tables made from runtime_common/rope.py's frequencies (every
scaling type), rotate-half on the first rope_dim features. The MLX kernels used where they compute the same thing:
`mx.fast.rms_norm` / `layer_norm`, `mx.fast.scaled_dot_product_attention` (GQA without repeating K/V; its "causal"
mask is lower-right aligned).

Parameters live at the names of the block's naming family, so the flattened names are the op's declared weights.
Role references (`self.q`, `self.norm1`, ...) are plain attributes outside MLX's parameter tree (`_ref`), so each
array appears once, at its declared name.

Decoding: `__call__(x, cache=None)`. A `LayerCache` holds `seen` tokens (the RoPE position of x's first token) and
K, V (B, kv, S, hs) after q/k norm and RoPE (sliding layers keep the last window - 1 positions) or, for conv layers,
the last kernel - 1 inputs of the convolution, channels-last (B, K-1, D): the torch runtime's (B, D, K-1) transposed,
the same bytes.
Shape vocabulary: B batch, T tokens of this call, S cached + new keys, D width, H heads, kv key/value heads,
hs head size, F MLP width, K conv kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
from mlx import nn

from compiler.ops.naming import name_of
from runtime_common.rope import attention_factor, effective_length, inv_freq
from compiler.activations import GATED

from ..registry import implements
from ..activations import ACT
from .basic import rms_norm

@dataclass
class LayerCache:
    """Decode state of one layer (see the module docstring); starts empty."""

    seen: int = 0
    k: Optional[mx.array] = None       # (B, kv, S, hs)
    v: Optional[mx.array] = None       # (B, kv, S, hs)
    conv: Optional[mx.array] = None    # (B, K-1, D)

    def arrays(self) -> list[mx.array]:
        return [a for a in (self.k, self.v, self.conv) if a is not None]


# --- leaves --------------------------------------------------------------------------------------------------------
class Box(nn.Module):
    """A plain module on the path to a parameter (`self_attn` in `self_attn.q_proj.weight`)."""


class Lin(nn.Module):
    def __init__(self, n_out: int, n_in: int, bias: bool):
        super().__init__()
        self.weight = mx.zeros((n_out, n_in))
        if bias:
            self.bias = mx.zeros((n_out,))

    def __call__(self, x):
        y = x @ self.weight.T
        return y + self.bias if "bias" in self else y


class Norm(nn.Module):
    """LayerNorm, or RMSNorm as transformers computes it (offset 0 casts before the weight, Gemma after)."""

    def __init__(self, dim: int, kind: str, eps: float, offset: float = 0.0):
        super().__init__()
        self.weight = mx.zeros((dim,))
        if kind == "layernorm":
            self.bias = mx.zeros((dim,))
        self.kind, self.eps, self.offset = kind, eps, offset

    def __call__(self, x):
        if self.kind == "layernorm":
            return mx.fast.layer_norm(x, self.weight, self["bias"], self.eps)
        return rms_norm(x, self.weight, self.eps, self.offset)


class DepthwiseConv(nn.Module):
    """The weights of a depthwise Conv1d in MLX layout, (D, K, 1) and (D,); applied causally by the block."""

    def __init__(self, dim: int, kernel: int, bias: bool):
        super().__init__()
        self.weight = mx.zeros((dim, kernel, 1))
        if bias:
            self.bias = mx.zeros((dim,))


def place(root: nn.Module, path: str, mod: Optional[nn.Module] = None, param: Optional[tuple] = None):
    """Install `mod` (or a bare zero array of shape `param`) at dotted `path` under root, creating Boxes; returns
    the module (or (parent module, key) for a bare array, read at call time so that loaded values are seen)."""
    *parts, last = path.split(".")
    m = root
    for part in parts:
        if part not in m:
            m[part] = Box()
        m = m[part]
    if mod is not None:
        m[last] = mod
        return mod
    m[last] = mx.zeros(param)
    return (m, last)


def _ref(obj, **kw) -> None:
    """Keep references to modules already in the tree as plain attributes (not a second tree entry)."""
    for k, v in kw.items():
        object.__setattr__(obj, k, v)


def rotate_half(x):
    h = x.shape[-1] // 2
    return mx.concatenate((-x[..., h:], x[..., :h]), axis=-1)


def apply_rope(x, cos, sin, rd: int):
    """Rotate-half RoPE on the first rd dims of the last axis (x (B, H, N, hs); cos, sin (N, rd))."""
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    xr, xp = x[..., :rd], x[..., rd:]
    return mx.concatenate((xr * cos + rotate_half(xr) * sin, xp), axis=-1)


class Rope:
    """One layer's rotary settings (theta, rotated dims, scaling resolved by the compiler) and its cos / sin rows:
    positions x runtime_common.rope's inverse frequencies in float32, cos and sin times the attention factor, cast.
    Length-dependent types (dynamic, longrope) use the frequencies of the call's last position + 1, as transformers'
    dynamic_rope_update does."""

    def __init__(self, theta: float, rd: int, scaling=None):
        self.theta, self.rd, self.scaling, self.scale = theta, rd, scaling, attention_factor(scaling)
        self._inv: dict = {}

    def rows(self, pos: int, T: int, dtype) -> tuple[mx.array, mx.array]:
        n = effective_length(self.scaling, pos + T) if self.scaling is not None else None
        inv = self._inv.get(n)
        if inv is None:
            inv = self._inv[n] = mx.array(inv_freq(self.theta, self.rd, self.scaling, n), dtype=mx.float32)
        freqs = mx.arange(pos, pos + T, dtype=mx.float32)[:, None] * inv[None, :]   # (T, rd/2)
        emb = mx.concatenate((freqs, freqs), axis=-1)                                 # (T, rd)
        cos, sin = mx.cos(emb), mx.sin(emb)
        if self.scale != 1.0:
            cos, sin = cos * self.scale, sin * self.scale
        return cos.astype(dtype), sin.astype(dtype)


def grid_angles(grid, rd: int, theta: float) -> mx.array:
    """DINOv3's 2-D RoPE angles (h*w, rd): patch centres in [-1, 1], layout [y | x | y | x] of rd/4 frequencies."""
    h, w = grid
    inv = 1 / theta ** mx.arange(0, 1, 4 / rd, dtype=mx.float32)                       # (rd/4,)
    cy = mx.arange(0.5, h, dtype=mx.float32) / h
    cx = mx.arange(0.5, w, dtype=mx.float32) / w
    yy, xx = mx.meshgrid(cy, cx, indexing="ij")
    coords = mx.stack((yy, xx), axis=-1).reshape(h * w, 2) * 2.0 - 1.0                  # (h*w, 2) (y, x)
    ang = 2 * math.pi * coords[:, :, None] * inv[None, None, :]                          # (h*w, 2, rd/4)
    ang = ang.reshape(h * w, -1)                                                         # (h*w, rd/2)
    return mx.concatenate((ang, ang), axis=-1)                                           # (h*w, rd)


# --- the block -----------------------------------------------------------------------------------------------------
@implements("TransformerBlock")
class TransformerBlock(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        n = lambda role: name_of(p.names, role)  # noqa: E731
        D = p.D
        self.kind = p.layer_type
        norm = lambda: Norm(D, p.norm, p.norm_eps, p.norm_offset)  # noqa: E731
        pre = p.pre_norms
        _ref(self, norm1=place(self, n("norm1"), norm()) if pre else None, gate_up_fused=None)
        if self.kind == "conv":
            _ref(self, conv_in=place(self, n("conv_in"), Lin(3 * D, D, p.conv_bias)),
                 conv=place(self, n("conv"), DepthwiseConv(D, p.conv_kernel, p.conv_bias)),
                 conv_out=place(self, n("conv_out"), Lin(D, D, p.conv_bias)))
            self.K = p.conv_kernel
        else:
            self._init_attention(p, n)
        _ref(self, post_attn_norm=place(self, n("post_attn_norm"), norm()) if p.post_norms else None,
             norm2=place(self, n("norm2"), norm()) if pre else None)
        self._init_ffn(p, n)
        _ref(self, post_mlp_norm=place(self, n("post_mlp_norm"), norm()) if p.post_norms else None,
             ls=(place(self, n("ls1"), param=(D,)), place(self, n("ls2"), param=(D,)))
             if p.layer_scale is not None else None)

    # --- construction ----------------------------------------------------------------------------------------------
    def _init_attention(self, p, n):
        D, hd, kvd = p.D, p.head_dim, p.kv * p.head_dim
        self.H, self.KV, self.hd = p.num_heads, p.kv, hd
        if p.fused_qkv:
            _ref(self, qkv=place(self, n("qkv"), Lin(p.inner + 2 * kvd, D, "q" in p.attn_bias)))
        else:
            _ref(self, qkv=None, q=place(self, n("q"), Lin(p.inner, D, "q" in p.attn_bias)),
                 k=place(self, n("k"), Lin(kvd, D, "k" in p.attn_bias)),
                 v=place(self, n("v"), Lin(kvd, D, "v" in p.attn_bias)))
        _ref(self, o=place(self, n("o"), Lin(D, p.inner, "o" in p.attn_bias)))
        self.qk_whole = p.qk_norm_scope == "all"                             # OLMo-2: over the whole projection
        if p.qk_norm:
            qd, kd = (p.inner, kvd) if self.qk_whole else (hd, hd)
            _ref(self, q_norm=place(self, n("q_norm"), Norm(qd, "rmsnorm", p.norm_eps, p.norm_offset)),
                 k_norm=place(self, n("k_norm"), Norm(kd, "rmsnorm", p.norm_eps, p.norm_offset)))
        else:
            _ref(self, q_norm=None, k_norm=None)
        self.scale = p.attn_scale if p.attn_scale is not None else hd ** -0.5
        self.window = p.sliding_window if self.kind == "sliding_attention" else None
        self.causal = p.causal
        self.rope, self.rd = p.rope, p.rope_dim or hd
        self.theta = p.theta
        _ref(self, rot=Rope(self.theta, self.rd, p.rope_scaling))
        self.softcap = p.attn_softcap
        self.prefix = p.rope_prefix
        if p.rope == "2d":
            ang = grid_angles(p.rope_grid, self.rd, self.theta)                          # (h*w, rd)
            _ref(self, cos=mx.cos(ang), sin=mx.sin(ang))

    def _init_ffn(self, p, n):
        D, Fw = p.D, p.ff_dim
        _ref(self, act=ACT[p.mlp])
        if p.fused_gate_up:
            _ref(self, gate=None, gate_up_fused=place(self, n("gate_up"), Lin(2 * Fw, D, p.mlp_bias)),
                 down=place(self, n("down"), Lin(D, Fw, p.mlp_bias)))
        elif p.mlp in GATED:
            _ref(self, gate=place(self, n("gate"), Lin(Fw, D, p.mlp_bias)),
                 up=place(self, n("up"), Lin(Fw, D, p.mlp_bias)),
                 down=place(self, n("down"), Lin(D, Fw, p.mlp_bias)))
        else:
            _ref(self, gate=None, fc1=place(self, n("fc1"), Lin(Fw, D, p.mlp_bias)),
                 fc2=place(self, n("fc2"), Lin(D, Fw, p.mlp_bias)))

    # --- forward ---------------------------------------------------------------------------------------------------
    def __call__(self, x, cache: Optional[LayerCache] = None):
        h = self.norm1(x) if self.norm1 is not None else x
        y = self._conv(h, cache) if self.kind == "conv" else self._attention(h, cache)
        if cache is not None:
            cache.seen += x.shape[1]
        if self.post_attn_norm is not None:
            y = self.post_attn_norm(y)
        if self.ls is not None:
            m, k = self.ls[0]
            y = y * m[k]
        x = x + y
        y = self.ffn(self.norm2(x) if self.norm2 is not None else x)
        if self.post_mlp_norm is not None:
            y = self.post_mlp_norm(y)
        if self.ls is not None:
            m, k = self.ls[1]
            y = y * m[k]
        return x + y

    def ffn(self, h):
        if self.gate_up_fused is not None:                                   # Phi-3: gate | up in one matrix
            g, u = mx.split(self.gate_up_fused(h), 2, axis=-1)               # (B, T, F) each
            return self.down(self.act(g) * u)                                # (B, T, D)
        if self.gate is not None:
            return self.down(self.act(self.gate(h)) * self.up(h))            # (B, T, F) -> (B, T, D)
        return self.fc2(self.act(self.fc1(h)))

    def _attention(self, h, cache):
        B, T, _ = h.shape
        if self.qkv is not None:
            qd, kd = self.H * self.hd, self.KV * self.hd
            q, k, v = mx.split(self.qkv(h), [qd, qd + kd], axis=-1)
        else:
            q, k, v = self.q(h), self.k(h), self.v(h)
        if self.q_norm is not None and self.qk_whole:
            q, k = self.q_norm(q), self.k_norm(k)                            # (B, T, H hs), (B, T, kv hs)
        q = q.reshape(B, T, self.H, self.hd)                                 # (B, T, H, hs)
        k = k.reshape(B, T, self.KV, self.hd)                                # (B, T, kv, hs)
        v = v.reshape(B, T, self.KV, self.hd).transpose(0, 2, 1, 3)          # (B, kv, T, hs)
        if self.q_norm is not None and not self.qk_whole:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)              # (B, H, T, hs), (B, kv, T, hs)
        pos = cache.seen if cache is not None else 0
        if self.rope == "1d":
            cos, sin = self.rot.rows(pos, T, q.dtype)                        # (T, rd) each
            q, k = apply_rope(q, cos, sin, self.rd), apply_rope(k, cos, sin, self.rd)
        elif self.rope == "2d":
            n0 = self.prefix
            cos, sin = self.cos.astype(h.dtype), self.sin.astype(h.dtype)
            q = mx.concatenate((q[:, :, :n0], apply_rope(q[:, :, n0:], cos, sin, self.rd)), axis=2)
            k = mx.concatenate((k[:, :, :n0], apply_rope(k[:, :, n0:], cos, sin, self.rd)), axis=2)
        n_cached = 0
        if cache is not None:
            if cache.k is not None:
                n_cached = cache.k.shape[2]
                k = mx.concatenate((cache.k, k), axis=2)                     # (B, kv, S, hs)
                v = mx.concatenate((cache.v, v), axis=2)
            keep = k.shape[2] if self.window is None else min(k.shape[2], self.window - 1)
            cache.k, cache.v = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]
        mask = self._mask(T, k.shape[2], pos, n_cached)
        if self.softcap is not None:
            y = self._attend_capped(q, k, v, mask, pos, n_cached)
        else:
            y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)   # (B, H, T, hs)
        return self.o(y.transpose(0, 2, 1, 3).reshape(B, T, self.H * self.hd))         # (B, T, D)

    def _attend_capped(self, q, k, v, mask, pos: int, n_cached: int):
        """Soft-capped attention, transformers' eager path: scores x scale, cap * tanh(scores / cap), masked,
        softmax in float32. q (B, H, T, hs); k, v (B, kv, S, hs); mask as `_mask` gives it."""
        T, S, rep = q.shape[2], k.shape[2], self.H // self.KV
        if rep > 1:
            k, v = mx.repeat(k, rep, axis=1), mx.repeat(v, rep, axis=1)    # (B, H, S, hs)
        s = (q @ k.transpose(0, 1, 3, 2)) * self.scale                       # (B, H, T, S)
        s = mx.tanh(s / self.softcap) * self.softcap
        if isinstance(mask, str):                                            # "causal", lower-right aligned
            qp = mx.arange(pos, pos + T)[:, None]
            mask = mx.arange(pos - n_cached, pos - n_cached + S)[None, :] <= qp
        if mask is not None:
            s = mx.where(mask, s, mx.finfo(s.dtype).min)
        return mx.softmax(s.astype(mx.float32), axis=-1).astype(q.dtype) @ v   # (B, H, T, hs)

    def _mask(self, T: int, S: int, pos: int, n_cached: int):
        """None, "causal" (lower-right aligned) or a boolean (T, S) mask, True = attend, for T queries at positions
        pos.. over S keys at positions pos - n_cached.."""
        W = self.window
        if W is None and not self.causal:
            return None
        if self.causal and (W is None or W >= S):
            return "causal" if T > 1 else None
        q = mx.arange(pos, pos + T)[:, None]                                 # (T, 1)
        k = mx.arange(pos - n_cached, pos - n_cached + S)[None, :]           # (1, S)
        if self.causal:
            return (k <= q) & (k > q - W)
        return mx.abs(q - k) < W

    def _conv(self, h, cache):
        """LFM2 ShortConv: in_proj -> B, C, x; B*x; depthwise causal conv (no bias by default); C*; out_proj."""
        K = self.K
        Bg, Cg, xg = mx.split(self.conv_in(h), 3, axis=-1)                  # 3 x (B, T, D)
        u = Bg * xg                                                          # (B, T, D)
        if cache is None or cache.conv is None:
            past = mx.zeros((u.shape[0], K - 1, u.shape[2]), dtype=u.dtype)  # (B, K-1, D)
        else:
            past = cache.conv
        full = mx.concatenate((past, u), axis=1)                             # (B, K-1+T, D)
        if cache is not None:
            cache.conv = full[:, full.shape[1] - (K - 1):]
        y = mx.conv1d(full, self.conv.weight, groups=u.shape[2])             # (B, T, D)
        if "bias" in self.conv:
            y = y + self.conv.bias
        return self.conv_out(Cg * y)                                         # (B, T, D)
