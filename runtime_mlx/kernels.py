"""The MLX kernels every op shares (mirror of `runtime_torch/kernels.py`): linear, the norms, rotary positions and
the one activation table.

The MLX kernels are used where they compute what the torch runtime computes: `mx.fast.rms_norm` / `layer_norm`.
1-D RoPE (`Rope`: runtime_common/rope.py's frequencies, every scaling type) applies cos / sin tables of positions
0.. on the CPU (rotate-half as a roll with a signed sin, `apply_rope_signed`) and `mx.fast.rope` on the GPU.
Activations are compiled into one elementwise kernel each where MLX can (`fused`).
Shape vocabulary: B batch, H heads, N positions, hs head size, rd rotated dims.
"""
from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx

from runtime_common.rope import attention_factor, effective_length, inv_freq


def fused(f):
    """`f` compiled into one elementwise kernel (`mx.compile`, shapeless, as mlx-lm's activations): no temporaries
    (the compiler's workspace counts none) and one pass over memory. Falls back to `f` where MLX cannot compile
    (no C++ compiler for the CPU backend), checked once on a tiny input."""
    g = mx.compile(f, shapeless=True)
    try:
        mx.eval(g(mx.zeros((2,))))
    except Exception:                                      # noqa: BLE001 - any failure means: run uncompiled
        return f
    return g


@fused
def gelu(x):
    """The exact form: x * Phi(x) with erf."""
    return x * (1 + mx.erf(x / math.sqrt(2.0))) / 2


@fused
def gelu_tanh(x):
    """The tanh approximation (torch's approximate="tanh", transformers' gelu_pytorch_tanh)."""
    return 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


@fused
def silu(x):
    return x * mx.sigmoid(x)


def relu(x):
    return mx.maximum(x, 0)


#: compiler/activations.py's activations by name (`Activation.fn`, a block's `act`), each what transformers' ACT2FN
#: entries of that name compute (tests/test_activations.py)
ACT = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "quick_gelu": lambda x: x * mx.sigmoid(1.702 * x),
    "relu": relu,
    "relu2": lambda x: mx.square(relu(x)),
    "relu6": lambda x: mx.minimum(relu(x), 6.0),
    "leaky_relu": lambda x: mx.where(x >= 0, x, 0.01 * x),
    "silu": silu,
    "sigmoid": mx.sigmoid,
    "tanh": mx.tanh,
    "mish": lambda x: x * mx.tanh(mx.logaddexp(x, 0.0)),
    "identity": lambda x: x,
}


def dense(x, m):
    """x W^T + b with module `m`'s `weight` (out, in) and `bias` (if declared); a module quantised by
    `mlx.nn.quantize` (runtime_mlx/quantize.py: an `nn.QuantizedLinear`, weight + scales + biases) runs its own
    quantised product."""
    if "scales" in m:
        return m(x)
    y = x @ m["weight"].T
    b = m.get("bias")
    return y if b is None else y + b


#: attention calls whose scores take fewer bytes than this are not checked (no cost on the common path)
CHECK_SCORES_BYTES = 1 << 28


def available_bytes() -> int:
    """What one allocation may take now: MLX's memory limit, and on Linux the kernel's MemAvailable."""
    limit = mx.get_memory_limit()
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            line = next(ln for ln in f if ln.startswith("MemAvailable:"))
        limit = min(limit, int(line.split()[1]) * 1024)
    except (OSError, StopIteration, ValueError):
        pass
    return limit


def check_scores(q, k) -> None:
    """MemoryError, saying why, when the (B, H, T, S) scores of q (B, H, T, hs) against k (B, kv, S, hs) cannot
    be allocated now (MLX ends the process, a segmentation fault, on an allocation that fails)."""
    B, H, T = q.shape[:3]
    need = B * H * T * k.shape[2] * max(q.dtype.size, 4)
    if need > CHECK_SCORES_BYTES:
        have = available_bytes()
        if need > have:
            heads = f"{H} head" + ("s" if H != 1 else "")
            raise MemoryError(f"attention over {T:,} queries and {k.shape[2]:,} keys ({heads}, batch {B}) needs "
                              f"{need / 2**30:.1f} GiB for its scores, {have / 2**30:.1f} GiB are available: "
                              f"shorten the sequence (for images: larger patches or a smaller image), or lower "
                              f"the batch")


def attend(q, k, v, scale: float, mask=None):
    """`mx.fast.scaled_dot_product_attention` (q (B, H, T, hs), k / v (B, kv, S, hs) -> (B, H, T, hs)), refused
    with a MemoryError that says why when its (B, H, T, S) scores cannot be allocated (MLX's CPU backend holds them
    whole): `check_scores`."""
    check_scores(q, k)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


def rms_norm(x, weight, eps: float, offset: float = 0.0):
    """x * rsqrt(mean(x^2) + eps) * (offset + weight), as `runtime_torch`'s: offset 0 casts the normalised x to the
    input dtype before the weight; offset != 0 (Gemma) multiplies in float32, then casts."""
    if offset == 0.0:
        return mx.fast.rms_norm(x, weight, eps)
    h = mx.fast.rms_norm(x.astype(mx.float32), offset + weight.astype(mx.float32), eps)
    return h.astype(x.dtype)


def norm(x, m, kind: str, eps: float, offset: float = 0.0):
    """LayerNorm ("layernorm", bias optional) or RMSNorm over the last axis, with module `m`'s tensors."""
    if kind == "layernorm":
        return mx.fast.layer_norm(x, m["weight"], m.get("bias"), eps)
    return rms_norm(x, m["weight"], eps, offset)


def rotate_half(x):
    h = x.shape[-1] // 2
    return mx.concatenate((-x[..., h:], x[..., :h]), axis=-1)


def apply_rope(x, cos, sin, rd: int):
    """Rotate-half RoPE on the first rd dims of the last axis (x (B, H, N, hs); cos, sin (N, rd))."""
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    xr, xp = x[..., :rd], x[..., rd:]
    return mx.concatenate((xr * cos + rotate_half(xr) * sin, xp), axis=-1)


def apply_rope_signed(x, cos, ssin, rd: int):
    """`apply_rope` with the sign of rotate_half moved into `ssin` (its first half negated, exact in floating
    point): x * cos + roll(x, rd/2) * ssin, one op fewer per call. x (B, H, N, hs); cos, ssin (N, rd)."""
    if rd == x.shape[-1]:
        return x * cos + mx.roll(x, rd // 2, axis=-1) * ssin
    xr, xp = x[..., :rd], x[..., rd:]
    return mx.concatenate((xr * cos + mx.roll(xr, rd // 2, axis=-1) * ssin, xp), axis=-1)


#: None: `mx.fast.rope` on the GPU, cos / sin tables on the CPU (where the fused kernel measured about 2x slower
#: than the tables' elementwise ops); True / False force one (tests check that both compute the same)
FAST_ROPE: Optional[bool] = None


def fast_rope() -> bool:
    return FAST_ROPE if FAST_ROPE is not None else mx.default_device().type == mx.DeviceType.gpu


class Rope:
    """One layer's rotary settings (theta, rotated dims, scaling resolved by the compiler) and its cos / sin rows:
    positions x runtime_common.rope's inverse frequencies in float32, cos and sin times the attention factor, cast.
    Length-dependent types (dynamic, longrope) use the frequencies of the call's last position + 1, as transformers'
    dynamic_rope_update does.

    `apply(x, pos)` rotates x (B, H, N, hs) at positions pos..pos+N-1: on the CPU from tables of positions 0..
    (cos and signed sin, each row what `rows` computes, grown by doubling; the layer's own, so they go with the
    model), on the GPU by `mx.fast.rope` with these frequencies (`fast_rope`). Dynamic scaling and nanoVLM's rescaled positions compute their rows per call."""

    def __init__(self, theta: float, rd: int, scaling=None):
        self.theta, self.rd, self.scaling, self.scale = theta, rd, scaling, attention_factor(scaling)
        self._inv: dict = {}
        self._tables: dict = {}     # (n, dtype) -> (cos (cap, rd), signed sin (cap, rd))

    def inv(self, n: Optional[int]) -> mx.array:
        """The rd/2 inverse frequencies (float32) for effective length n."""
        inv = self._inv.get(n)
        if inv is None:
            inv = self._inv[n] = mx.array(inv_freq(self.theta, self.rd, self.scaling, n), dtype=mx.float32)
        return inv

    def length(self, seq_len: int) -> Optional[int]:
        return effective_length(self.scaling, seq_len) if self.scaling is not None else None

    def angles(self, t: mx.array, n: Optional[int], dtype, signed: bool) -> tuple[mx.array, mx.array]:
        """cos, sin (N, rd) of positions t (N,) (float32), times the attention factor, cast to dtype; with
        `signed`, sin's first half negated (`apply_rope_signed`)."""
        freqs = t[:, None] * self.inv(n)[None, :]                                   # (N, rd/2)
        emb = mx.concatenate((freqs, freqs), axis=-1)                                 # (N, rd)
        cos, sin = mx.cos(emb), mx.sin(emb)
        if self.scale != 1.0:
            cos, sin = cos * self.scale, sin * self.scale
        if signed:
            h = self.rd // 2
            sin = mx.concatenate((-sin[:, :h], sin[:, h:]), axis=-1)
        return cos.astype(dtype), sin.astype(dtype)

    def rows(self, pos: int, T: int, dtype, div: Optional[float] = None) -> tuple[mx.array, mx.array]:
        """cos, sin (T, rd) of positions pos..pos+T-1, divided by `div` when given (nanoVLM's rope_rescale_past)."""
        t = mx.arange(pos, pos + T, dtype=mx.float32)
        return self.angles(t / div if div is not None else t, self.length(pos + T), dtype, False)

    def table_rows(self, pos: int, T: int, dtype) -> tuple[mx.array, mx.array]:
        """cos, signed sin (T, rd) of positions pos..pos+T-1 from this layer's tables."""
        n = self.length(pos + T)
        tab = self._tables.get((n, dtype))
        if tab is None or pos + T > tab[0].shape[0]:
            cap = max(pos + T, 64, 2 * tab[0].shape[0] if tab is not None else 0)
            cos, sin = self.angles(mx.arange(cap, dtype=mx.float32), n, dtype, True)
            mx.eval(cos, sin)
            tab = self._tables[(n, dtype)] = (cos, sin)
        return tab[0][pos:pos + T], tab[1][pos:pos + T]

    def apply(self, x: mx.array, pos: int, div: Optional[float] = None) -> mx.array:
        """x (B, H, N, hs) rotated on its first rd features at positions pos.. (divided by `div`: nanoVLM)."""
        T = x.shape[2]
        if div is not None or (self.scaling is not None and self.scaling.rope_type == "dynamic"):
            # rescaled positions, or frequencies that change with every length past the original context
            return apply_rope(x, *self.rows(pos, T, x.dtype, div), self.rd)
        if fast_rope() and (self.scale == 1.0 or self.rd == x.shape[-1]):
            if self.scale != 1.0:                   # the attention factor scales cos and sin: x, all rotated
                x = x * mx.array(self.scale, dtype=mx.float32).astype(x.dtype)
            return mx.fast.rope(x, self.rd, traditional=False, base=None, scale=1.0, offset=pos,
                                freqs=1.0 / self.inv(self.length(pos + T)))
        return apply_rope_signed(x, *self.table_rows(pos, T, x.dtype), self.rd)


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
