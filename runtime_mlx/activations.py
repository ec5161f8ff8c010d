"""MLX functions of omnic's activations (compiler/activations.py), one per name, and per MLP kind.

The formulas of transformers' ACT2FN entries (tests/test_activations.py checks them against transformers).
"""
from __future__ import annotations

import math

import mlx.core as mx

from compiler.activations import MLP_KINDS, activation_of


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


FUNCTIONS = {
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

# MLP kind -> the function applied to the (gate) hidden layer
ACT = {kind: FUNCTIONS[activation_of(kind)] for kind in MLP_KINDS}
