"""Torch implementation of TransformerBlock (compiler/ops/transformer.py), every variant its params allow.

    x = x + ls1 * post_attn_norm(mixer(norm1(x)))       mixer: attention (full / sliding) or LFM2 short convolution
    x = x + ls2 * post_mlp_norm(ffn(norm2(x)))          ffn: plain or gated MLP (GQA_MoE_Layer: experts, moe.py)
(post norms only with `post_norms`, LayerScale only with `layer_scale`). The reference behaviour, bit for bit
where the summation order allows, is transformers 5.x: llama (RoPE, GQA), gemma3 (offset RMSNorm, q/k norm, sandwich
norms, sliding mask `q - W < k <= q`, local RoPE base, query_pre_attn_scalar), gemma2 (attention logit soft-capping:
the eager path, as SDPA cannot cap), phi3 (fused q|k|v and gate|up), olmo2 (post norms only, q/k norm over the
whole projection), smollm3 (NoPE layers), lfm2 (ShortConv), siglip, dinov2 (LayerScale), dinov3_vit (2-D RoPE on
patch tokens). Rotary frequencies of every scaling type come from runtime_common/rope.py.

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
from runtime_common.rope import attention_factor, effective_length, inv_freq
from compiler.activations import GATED

from ..activations import ACT
from ..pack import linear
from ..registry import implements

@dataclass
class LayerCache:
    """Decode state of one layer (see the module docstring); starts empty. K and V of a full-attention layer live
    in buffers with room for `reserve` tokens (set by the caller that knows the final length, e.g. `generate`),
    grown by doubling past it; `k`, `v` are views of the filled part."""

    seen: int = 0
    conv: Optional[torch.Tensor] = None    # (B, D, K-1)
    reserve: int = 0
    kbuf: Optional[torch.Tensor] = None    # (B, kv, capacity, hs)
    vbuf: Optional[torch.Tensor] = None
    n: int = 0                             # filled positions of kbuf / vbuf

    @property
    def k(self) -> Optional[torch.Tensor]:   # (B, kv, S, hs)
        return None if self.kbuf is None else self.kbuf.narrow(2, 0, self.n)

    @property
    def v(self) -> Optional[torch.Tensor]:   # (B, kv, S, hs)
        return None if self.vbuf is None else self.vbuf.narrow(2, 0, self.n)

    def extend(self, k: torch.Tensor, v: torch.Tensor, window: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, kv, T, hs); return all keys and values a query of this call sees (B, kv, S, hs). A
        sliding layer keeps the last window - 1 positions afterwards (all a later query can see)."""
        if self.kbuf is not None and self.kbuf.shape[:2] != k.shape[:2]:
            raise ValueError(f"this cache holds batch x kv heads {tuple(self.kbuf.shape[:2])}; the new keys are "
                             f"{tuple(k.shape[:2])} (start a new decode session for another batch)")
        if window is not None:
            if self.kbuf is not None:
                k, v = torch.cat((self.kbuf, k), dim=2), torch.cat((self.vbuf, v), dim=2)
            keep = min(k.shape[2], window - 1)
            trim = (lambda t: t[:, :, t.shape[2] - keep:].clone()) if keep < k.shape[2] else (lambda t: t)
            self.kbuf, self.vbuf = trim(k), trim(v)        # a copy: the view would hold the whole of k alive
            self.n = keep
            return k, v
        end = self.n + k.shape[2]
        if self.kbuf is None or end > self.kbuf.shape[2]:
            cap = max(end, self.reserve, 2 * self.kbuf.shape[2] if self.kbuf is not None else 0)
            kb = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            vb = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
            if self.n:
                kb.narrow(2, 0, self.n).copy_(self.k)
                vb.narrow(2, 0, self.n).copy_(self.v)
            self.kbuf, self.vbuf = kb, vb
        T = k.shape[2]
        self.kbuf.narrow(2, self.n, T).copy_(k)          # narrow, not [:, :, a:b]: decoding runs this per token
        self.vbuf.narrow(2, self.n, T).copy_(v)
        self.n = end
        return self.kbuf.narrow(2, 0, end), self.vbuf.narrow(2, 0, end)


# --- leaves --------------------------------------------------------------------------------------------------------
class Box(nn.Module):
    """A plain module on the path to a parameter (`self_attn` in `self_attn.q_proj.weight`)."""


class Lin(nn.Module):
    def __init__(self, n_out: int, n_in: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None

    def forward(self, x):
        return linear(x, self.weight, self.bias)


class Norm(nn.Module):
    """LayerNorm, or RMSNorm as transformers computes it (float32; offset 0 casts before the weight, Gemma after)."""

    def __init__(self, dim: int, kind: str, eps: float, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim)) if kind == "layernorm" else None
        self.kind, self.eps, self.offset, self.shape = kind, eps, offset, (dim,)

    def forward(self, x):
        w = self.weight
        if self.kind == "layernorm":
            return F.layer_norm(x, self.shape, w, self.bias, self.eps)
        if self.offset == 0.0 and x.dtype == w.dtype == torch.float32:
            return torch.rms_norm(x, self.shape, w, self.eps)         # one call, bit-equal to the lines below
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


def apply_rope(x, cos, sin, rd: int):
    """Rotate-half RoPE on the first rd dims of the last axis: x * cos + rotate_half(x) * sin, written as
    x * cos + roll(x, rd/2) * sin with the sign of rotate_half moved into `sin` (its first half negated; exact in
    floating point). x (B, H, N, hs); cos, sin (N, rd)."""
    if rd == x.shape[-1]:
        return x * cos + x.roll(rd // 2, dims=-1) * sin
    xr, xp = x[..., :rd], x[..., rd:]
    return torch.cat((xr * cos + xr.roll(rd // 2, dims=-1) * sin, xp), dim=-1)


def rope_tables(ang: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin (see apply_rope) of angles (N, rd) in float32, times the attention factor `scale` (yarn,
    longrope), cast to the compute dtype (as transformers does)."""
    h = ang.shape[-1] // 2
    cos, sin = ang.cos(), ang.sin()
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    return cos.to(dtype), torch.cat((-sin[:, :h], sin[:, h:]), dim=-1).to(dtype)


class Rope:
    """One layer's rotary settings (theta, rotated dims, scaling resolved by the compiler), hashable: the key of the
    shared tables. The frequencies are runtime_common.rope's, for the effective length of a call (`length`)."""

    def __init__(self, theta: float, rd: int, scaling=None):
        self.theta, self.rd, self.scaling = theta, rd, scaling
        self.scale = attention_factor(scaling)
        self.key = (theta, rd, scaling.model_dump_json() if scaling is not None else None)

    def length(self, seq_len: int) -> Optional[int]:
        return effective_length(self.scaling, seq_len)

    def inv(self, seq_len: Optional[int], device) -> torch.Tensor:
        return torch.tensor(inv_freq(self.theta, self.rd, self.scaling, seq_len), dtype=torch.float32, device=device)


class RopeTable:
    """cos and signed sin (see apply_rope) of positions 0.. for one (Rope, effective length, dtype, device), shared
    by every block that uses them: transformers' float32 ops (positions x inverse frequencies, cos / sin, times the
    attention factor, cast), elementwise, so a row does not depend on the table's size; grown by doubling. The rows
    of the last (pos, T) asked for are kept, so the blocks of one decoding step slice the table once. Length-
    dependent types (dynamic, longrope) use the frequencies of seq_len = pos + T, the call's last position + 1, as
    transformers' dynamic_rope_update does."""

    _all: dict = {}

    def __init__(self, rope: Rope, n: Optional[int], dtype: torch.dtype, device: torch.device):
        self.rope, self.n, self.dtype, self.device = rope, n, dtype, device
        self.cos = self.sin = torch.empty(0, rope.rd, dtype=dtype, device=device)
        self.last: tuple = (-1, -1, None)

    @classmethod
    def rows(cls, rope: Rope, pos: int, T: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = rope.length(pos + T) if rope.scaling is not None else None
        if torch.compiler.is_compiling():          # compile or export, symbolic T: no Python-side cache
            return cls.angles(rope, n, torch.arange(pos, pos + T, device=like.device, dtype=torch.float), like.dtype)
        key = (rope.key, n, like.dtype, like.device)
        tab = cls._all.get(key)
        last = tab.last if tab is not None else None
        if last is not None and last[0] == pos and last[1] == T:
            return last[2]
        with torch.inference_mode(False):          # normal tensors: a later training forward may save them
            if tab is None:
                tab = cls._all[key] = cls(rope, n, like.dtype, like.device)
            if pos + T > tab.cos.shape[0]:
                tab._grow(max(pos + T, 64, 2 * tab.cos.shape[0]))
            out = (tab.cos.narrow(0, pos, T), tab.sin.narrow(0, pos, T))      # (T, rd) each
        tab.last = (pos, T, out)
        return out

    def _grow(self, n: int) -> None:
        self.cos, self.sin = self.angles(self.rope, self.n, torch.arange(0, n, device=self.device,
                                                                        dtype=torch.float), self.dtype)

    @staticmethod
    def angles(rope: Rope, n: Optional[int], t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin (N, rd) of positions t (N,) in float32, with the frequencies of effective length n."""
        inv = rope.inv(n, t.device)
        freqs = t[:, None] * inv[None, :]                                    # (N, rd/2)
        return rope_tables(torch.cat((freqs, freqs), dim=-1), dtype, rope.scale)   # (N, rd) each


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
        pre = p.pre_norms
        self._keep("norm1", n("norm1") if pre else None, norm() if pre else None)
        if self.kind == "conv":
            self._keep("conv_in", n("conv_in"), Lin(3 * D, D, p.conv_bias))
            self._keep("dwconv", n("conv"), DepthwiseConv(D, p.conv_kernel, p.conv_bias))
            self._keep("conv_out", n("conv_out"), Lin(D, D, p.conv_bias))
        else:
            self._init_attention(p, n)
        post = p.post_norms
        self._keep("post_attn_norm", n("post_attn_norm") if post else None, norm() if post else None)
        self._keep("norm2", n("norm2") if pre else None, norm() if pre else None)
        self._keep("gate_up_fused", None, None)
        self._init_ffn(p, n)
        self._keep("post_mlp_norm", n("post_mlp_norm") if post else None, norm() if post else None)
        self._keep("ls", None, None)
        self._groups: dict = {}            # "qkv", "gate_up": runtime_torch.pack.Packed, set by pack()
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
            self._keep("qkv", n("qkv"), Lin(p.inner + 2 * kvd, D, "q" in p.attn_bias))
        else:
            self._keep("qkv", None, None)
            self._keep("q", n("q"), Lin(p.inner, D, "q" in p.attn_bias))
            self._keep("k", n("k"), Lin(kvd, D, "k" in p.attn_bias))
            self._keep("v", n("v"), Lin(kvd, D, "v" in p.attn_bias))
        self._keep("o", n("o"), Lin(D, p.inner, "o" in p.attn_bias))
        self.qk_whole = p.qk_norm_scope == "all"                             # OLMo-2: over the whole projection
        if p.qk_norm:
            qd, kd = (p.inner, kvd) if self.qk_whole else (hd, hd)
            self._keep("q_norm", n("q_norm"), Norm(qd, "rmsnorm", p.norm_eps, p.norm_offset))
            self._keep("k_norm", n("k_norm"), Norm(kd, "rmsnorm", p.norm_eps, p.norm_offset))
        else:
            self._keep("q_norm", None, None)
            self._keep("k_norm", None, None)
        self.scale = p.attn_scale if p.attn_scale is not None else hd ** -0.5
        self.window = p.sliding_window if self.kind == "sliding_attention" else None
        self.causal = p.causal
        self.rope, self.rd = p.rope, p.rope_dim or hd
        self.theta = p.theta
        self.rot = Rope(self.theta, self.rd, p.rope_scaling)
        self.softcap = p.attn_softcap
        self.grid, self.prefix = p.rope_grid, p.rope_prefix

    def _init_ffn(self, p, n):
        D, Fw = p.D, p.ff_dim
        self.act = ACT[p.mlp]
        if p.fused_gate_up:
            self._keep("gate", None, None)
            self._keep("gate_up_fused", n("gate_up"), Lin(2 * Fw, D, p.mlp_bias))
            self._keep("down", n("down"), Lin(D, Fw, p.mlp_bias))
        elif p.mlp in GATED:
            self._keep("gate", n("gate"), Lin(Fw, D, p.mlp_bias))
            self._keep("up", n("up"), Lin(Fw, D, p.mlp_bias))
            self._keep("down", n("down"), Lin(D, Fw, p.mlp_bias))
        else:
            self._keep("gate", None, None)
            self._keep("fc1", n("fc1"), Lin(Fw, D, p.mlp_bias))
            self._keep("fc2", n("fc2"), Lin(D, Fw, p.mlp_bias))

    def pack(self) -> list:
        """Share one column-major buffer among q | k | v and among gate | up (runtime_torch/pack.py); returns the
        parameters placed."""
        from ..pack import group
        self._groups = {}
        if self.kind != "conv" and self.qkv is None:
            self._groups["qkv"] = group([self.q, self.k, self.v])
        if self.gate is not None:
            self._groups["gate_up"] = group([self.gate, self.up])
        self._groups = {k: g for k, g in self._groups.items() if g is not None}
        return [t for g in self._groups.values() for m in g.mods for t in (m.weight, m.bias) if t is not None]

    def _fused(self, key: str):
        """The packed group `key` when its fused product may run (Packed.usable), else None."""
        g = self._groups.get(key) if self._groups else None
        return g if g is not None and g.usable() else None

    # --- forward ---------------------------------------------------------------------------------------------------
    def forward(self, x, cache: Optional[LayerCache] = None):
        h = self.norm1(x) if self.norm1 is not None else x
        y = self._conv(h, cache) if self.kind == "conv" else self._attention(h, cache)
        if cache is not None:
            cache.seen += x.shape[1]
        if self.post_attn_norm is not None:
            y = self.post_attn_norm(y)
        if self.ls is not None:
            y = y * getattr(*self.ls[0])
        x = x + y
        y = self.ffn(self.norm2(x) if self.norm2 is not None else x)
        if self.post_mlp_norm is not None:
            y = self.post_mlp_norm(y)
        if self.ls is not None:
            y = y * getattr(*self.ls[1])
        return x + y

    def ffn(self, h):
        if self.gate_up_fused is not None:                                   # Phi-3: gate | up in one matrix
            g, u = self.gate_up_fused(h).chunk(2, dim=-1)                    # (B, T, F) each
            return self.down(self.act(g) * u)                                # (B, T, D)
        if self.gate is not None:
            fused = self._fused("gate_up")
            g, u = fused(h) if fused is not None else (self.gate(h), self.up(h))   # (B, T, F) each
            return self.down(self.act(g) * u)                                # (B, T, D)
        return self.fc2(self.act(self.fc1(h)))

    def _attention(self, h, cache):
        B, T, _ = h.shape
        fused = self._fused("qkv")
        if (fused is not None and T == 1 and cache is not None and self.q_norm is None and self.rope != "2d"
                and self.rd == self.hd and self.softcap is None):
            return self._attend_one(h, cache, fused)
        if self.qkv is not None:
            q, k, v = self.qkv(h).split((self.H * self.hd, self.KV * self.hd, self.KV * self.hd), dim=-1)
        elif fused is not None:
            q, k, v = fused(h)
        else:
            q, k, v = self.q(h), self.k(h), self.v(h)
        if self.q_norm is not None and self.qk_whole:
            q, k = self.q_norm(q), self.k_norm(k)                            # (B, T, H hs), (B, T, kv hs)
        q = q.view(B, T, self.H, self.hd)                                    # (B, T, H, hs)
        k = k.view(B, T, self.KV, self.hd)                                   # (B, T, kv, hs)
        v = v.view(B, T, self.KV, self.hd).transpose(1, 2)                   # (B, kv, T, hs)
        if self.q_norm is not None and not self.qk_whole:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)                          # (B, H, T, hs), (B, kv, T, hs)
        pos = cache.seen if cache is not None else 0
        if self.rope == "1d":
            cos, sin = RopeTable.rows(self.rot, pos, T, h)                   # (T, rd) each
            q, k = apply_rope(q, cos, sin, self.rd), apply_rope(k, cos, sin, self.rd)
        elif self.rope == "2d":
            cos, sin = rope_tables(grid_angles(self.grid, self.rd, self.theta).to(h.device), h.dtype)  # (h*w, rd)
            n0 = self.prefix
            q = torch.cat((q[:, :, :n0], apply_rope(q[:, :, n0:], cos, sin, self.rd)), dim=2)
            k = torch.cat((k[:, :, :n0], apply_rope(k[:, :, n0:], cos, sin, self.rd)), dim=2)
        n_cached = 0
        if cache is not None:
            n_cached = cache.n
            k, v = cache.extend(k, v, self.window)                           # (B, kv, S, hs)
        if self.softcap is not None:
            y = self._attend_capped(q, k, v, self._mask(T, k.shape[2], pos, n_cached, h.device, explicit=True)[0])
        else:
            mask, is_causal = self._mask(T, k.shape[2], pos, n_cached, h.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
                                               enable_gqa=self.KV != self.H)     # (B, H, T, hs)
        return self.o(y.transpose(1, 2).reshape(B, T, self.H * self.hd))     # (B, T, D)

    def _attend_capped(self, q, k, v, keep):
        """Attention with soft-capped scores, transformers' eager path (SDPA cannot cap): scores x scale, then
        cap * tanh(scores / cap), masked, softmax in float32. q (B, H, T, hs); k, v (B, kv, S, hs); keep (T, S)."""
        rep = self.H // self.KV
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)   # (B, H, S, hs)
        s = torch.matmul(q, k.transpose(2, 3)) * self.scale                  # (B, H, T, S)
        s = torch.tanh(s / self.softcap) * self.softcap
        if keep is not None:
            s = s.masked_fill(~keep, torch.finfo(s.dtype).min)
        return torch.matmul(F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype), v)   # (B, H, T, hs)

    def _attend_one(self, h, cache, fused):
        """The attention below for one new token per row over a cache, from the packed q|k|v product, in fewer tensor
        ops (decoding runs them per token and layer): with T = 1, (B, T, heads, hs) and (B, heads, T, hs) are one
        memory layout, so q|k take one view and one RoPE (if any), and no transposes are needed."""
        B, H, KV, hd = h.shape[0], self.H, self.KV, self.hd
        qkv = linear(h, fused.wt, fused.bias)                                # (B, 1, (H + 2kv) hs)
        qk = qkv.narrow(-1, 0, (H + KV) * hd).view(B, H + KV, 1, hd)          # (B, H + kv, 1, hs)
        if self.rope == "1d":
            qk = apply_rope(qk, *RopeTable.rows(self.rot, cache.seen, 1, h), hd)
        n_cached = cache.n
        k, v = cache.extend(qk.narrow(1, H, KV), qkv.narrow(-1, (H + KV) * hd, KV * hd).view(B, KV, 1, hd),
                            self.window)                                     # (B, kv, S, hs)
        mask, is_causal = self._mask(1, k.shape[2], cache.seen, n_cached, h.device)
        y = F.scaled_dot_product_attention(qk.narrow(1, 0, H), k, v, attn_mask=mask, is_causal=is_causal,
                                           scale=self.scale, enable_gqa=KV != H)   # (B, H, 1, hs)
        return self.o(y.reshape(B, 1, H * hd))                               # (B, 1, D)

    def _mask(self, T: int, S: int, pos: int, n_cached: int, device, explicit: bool = False):
        """(mask or None, is_causal) for T queries at positions pos.. over S keys at positions pos - n_cached..;
        `explicit`: a causal mask is given as a tensor, not as is_causal."""
        W = self.window
        if W is None and not self.causal:
            return None, False
        if self.causal and (W is None or W >= S) and (T == 1 or n_cached == 0) and not explicit:
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
            cache.conv = full[..., full.shape[-1] - (K - 1):].clone()   # (B, D, K-1), own storage
        y = F.conv1d(full, self.dwconv.weight, self.dwconv.bias, groups=u.shape[1])   # (B, D, T)
        return self.conv_out((Cg * y).transpose(-1, -2))                     # (B, T, D)
