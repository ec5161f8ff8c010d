"""The torch kernels every op shares: linear, the norms, rotary positions, and the one activation table.

Op modules (`runtime_torch/ops/`) are forward code over parameters the declaration built (`node.py`); what they
compute in common lives here, once. Numerics are transformers 5.x's, bit for bit where the summation order allows:
RMSNorm in float32 (offset 0 casts before the weight, Gemma's offset after), rotate-half RoPE with float32 angles
from runtime_common/rope.py's frequencies (every scaling type).
Shape vocabulary: B batch, H heads, N positions, hs head size, rd rotated dims.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from runtime_common.rope import attention_factor, effective_length, exponents, inv_freq

SPLIT_ROWS = 8     # products of 2 to this many rows are split across threads (more rows: MKL's GEMM threads them)
#: dtypes whose matrix-vector product reads a column-major (out, in) weight faster than a row-major one (fp32: 27-39
#: GB/s against 19-36 on this project's CPU); others are kept row-major: bf16 reads 16-30 GB/s row-major in torch.mv
#: and 7-9 column-major (bench/bench_torch.py; runtime_torch/pack.py reads this rule)
COLUMN_MAJOR_DTYPES = (torch.float32,)

#: compiler/activations.py's activations by name (`Activation.fn`, a block's `act`), each what transformers' ACT2FN
#: entries of that name compute (torch's kernels where transformers calls them; tests/test_activations.py)
ACT = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "relu2": lambda x: torch.square(F.relu(x)),
    "relu6": F.relu6,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "mish": F.mish,
    "identity": lambda x: x,
}


def _plain(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the CPU shortcuts of `linear` may run: a plain weight (not quantised, quantize.py) on the CPU, no
    tracing, no dispatch mode."""
    return (x.is_cpu and type(w) in (torch.Tensor, torch.nn.Parameter) and not torch.compiler.is_compiling()
            and _get_current_dispatch_mode() is None)


def linear(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.linear(x, w, b) (x (..., in), w (out, in)), faster for few rows on the CPU (see pack.py): one row runs
    torch.mv (either layout; it threads the product); 2 to SPLIT_ROWS rows of an fp32 weight are split into P blocks
    of output columns run in parallel by one torch.bmm when there are P > 1 threads. Traced graphs and dispatch
    modes (FlopCounterMode counts addmm, not mv) get F.linear."""
    out, d = w.shape
    if not _plain(x, w) or x.numel() > SPLIT_ROWS * d or d == 0:
        return F.linear(x, w, b)                        # traced graphs stay plain; other devices have their own
    if x.numel() == d and d:                                                   # one row: a matrix-vector product
        v = x.reshape(d)
        y = torch.mv(w, v) if b is None else torch.addmv(b, w, v)             # (out,)
        return y.view(*x.shape[:-1], out)
    P = torch.get_num_threads()
    if P == 1 or out % P or out < 64 * P or w.dtype not in COLUMN_MAJOR_DTYPES:
        return F.linear(x, w, b)
    if w.stride() == (1, out):                                                 # column-major: w.t() contiguous
        wv = w.t().view(d, P, out // P).permute(1, 0, 2)                       # (P, in, out/P)
    elif w.is_contiguous():
        wv = w.view(P, out // P, d).transpose(1, 2)                            # (P, in, out/P)
    else:
        return F.linear(x, w, b)
    M = x.numel() // d
    y = torch.bmm(x.reshape(1, M, d).expand(P, M, d), wv)                     # (P, M, out/P)
    y = y.transpose(0, 1).reshape(*x.shape[:-1], out)                          # (..., out)
    return y if b is None else y + b


def linear_add(r: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """r + linear(x, w) (r (..., out)), for a residual stream: one torch.addmv when x is one row on the CPU."""
    if x.numel() == w.shape[1] > 0 and _plain(x, w):
        return torch.addmv(r.reshape(-1), w, x.reshape(-1)).view(r.shape)
    return r + linear(x, w)


def dense(x: torch.Tensor, m) -> torch.Tensor:
    """`linear` with the weight and bias of module `m` (a declared projection: `m.weight`, `m.bias` or None)."""
    return linear(x, m.weight, m.bias)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * (offset + w), normalised in float32: offset 0 (Llama, Qwen) casts the normalised
    x back to the input dtype and then multiplies by w; offset != 0 (Gemma: 1 + w) multiplies in float32, then
    casts."""
    if offset == 0.0 and x.dtype == w.dtype == torch.float32:
        return torch.rms_norm(x, (x.shape[-1],), w, eps)             # one call, bit-equal to the lines below
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if offset == 0.0:
        return (w * h.to(x.dtype)).to(x.dtype)
    return (h * (offset + w.float())).to(x.dtype)


def norm(x: torch.Tensor, m, kind: str, eps: float, offset: float = 0.0) -> torch.Tensor:
    """LayerNorm ("layernorm", `m.bias` may be None) or RMSNorm over the last axis, with module `m`'s tensors."""
    if kind == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, eps)
    return rms_norm(x, m.weight, eps, offset)


# --- rotary positions ----------------------------------------------------------------------------------------------
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
        if torch.compiler.is_compiling():          # compile or export, symbolic T: no Python-side cache
            t = torch.arange(pos, pos + T, device=like.device, dtype=torch.float)
            if rope.scaling is not None and rope.scaling.rope_type == "longrope":
                return cls.longrope_angles(rope, t, like.dtype)
            if rope.scaling is not None and rope.scaling.rope_type == "dynamic":
                return cls.dynamic_angles(rope, t, like.dtype)
            return cls.angles(rope, rope.length(pos + T) if rope.scaling is not None else None, t, like.dtype)
        n = rope.length(pos + T) if rope.scaling is not None else None
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

    @classmethod
    def longrope_angles(cls, rope: Rope, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """`angles` of positions t (N,) under longrope with the short or long factors chosen by a tensor (the last
        position + 1 past the original length), not by a Python branch on the length: an exported graph keeps both
        and is right at every length (a branch would fix the export to one side of the original length)."""
        orig = rope.scaling.original_max_position_embeddings
        inv = torch.where(t[-1:] + 1 > orig, rope.inv(orig + 1, t.device), rope.inv(orig, t.device))   # (rd/2,)
        return RopeTable.of_inv(rope, inv, t, dtype)

    @classmethod
    def dynamic_angles(cls, rope: Rope, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """`angles` of positions t (N,) under dynamic NTK scaling with the base of the last position + 1 computed as
        a tensor (runtime_common.rope.inv_freq's arithmetic and float32 roundings), not by a Python branch on the
        length: an exported graph is right at every length."""
        s, rd = rope.scaling, rope.rd
        mp = s.max_position_embeddings
        n = torch.clamp(t[-1:] + 1, min=mp).to(torch.float64)                 # (1,)
        base = rope.theta * ((s.factor * n / mp) - (s.factor - 1)) ** (rd / (rd - 2))
        e = torch.tensor(exponents(rd), dtype=torch.float64, device=t.device)    # (rd/2,) float32 values
        p = (base.to(torch.float32).to(torch.float64) ** e).to(torch.float32).to(torch.float64)
        inv = (1.0 / p).to(torch.float32)                                    # (rd/2,)
        return RopeTable.of_inv(rope, inv, t, dtype)

    @staticmethod
    def of_inv(rope: Rope, inv: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin (N, rd) of positions t (N,) in float32 with inverse frequencies inv (rd/2,)."""
        freqs = t[:, None] * inv[None, :]                                    # (N, rd/2)
        return rope_tables(torch.cat((freqs, freqs), dim=-1), dtype, rope.scale)   # (N, rd) each

    @staticmethod
    def angles(rope: Rope, n: Optional[int], t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin (N, rd) of positions t (N,) in float32, with the frequencies of effective length n."""
        inv = rope.inv(n, t.device)
        return RopeTable.of_inv(rope, inv, t, dtype)


def grid_angles(grid, rd: int, theta: float) -> torch.Tensor:
    """DINOv3's 2-D RoPE angles (h*w, rd): patch centres in [-1, 1], layout [y | x | y | x] of rd/4 frequencies."""
    h, w = grid
    inv = 1 / theta ** torch.arange(0, 1, 4 / rd, dtype=torch.float32)                 # (rd/4,)
    cy = torch.arange(0.5, h, dtype=torch.float32) / h
    cx = torch.arange(0.5, w, dtype=torch.float32) / w
    coords = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).flatten(0, 1) * 2.0 - 1.0   # (h*w, 2) (y, x)
    ang = 2 * math.pi * coords[:, :, None] * inv[None, None, :]                          # (h*w, 2, rd/4)
    return ang.flatten(1, 2).tile(2)                                                     # (h*w, rd)
