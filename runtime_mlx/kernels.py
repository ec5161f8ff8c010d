"""The MLX kernels every op shares (mirror of `runtime_torch/kernels.py`): linear, the norms, rotary positions and
the one activation table.

The MLX kernels are used where they compute what the torch runtime computes: `mx.fast.rms_norm` / `layer_norm`,
`mx.fast.rope` (traditional=False is transformers' rotate-half; called by the blocks). Activations are compiled
into one elementwise kernel each where MLX can (`fused`).
Shape vocabulary: B batch, H heads, N positions, hs head size, rd rotated dims.
"""
from __future__ import annotations

import math

import mlx.core as mx


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


#: activations by the name the compiler resolves (`Activation.fn`, a block's `act`)
ACT = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "silu": silu,
    "relu": lambda x: mx.maximum(x, 0),
    "tanh": mx.tanh,
    "sigmoid": mx.sigmoid,
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
