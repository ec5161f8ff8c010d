"""Torch functions of omnic's activations (compiler/activations.py), one per name, and per MLP kind.

Each computes what transformers' ACT2FN entries of that name compute (tests/test_activations.py): torch's own
kernels where transformers calls them (gelu, gelu tanh, silu, relu, relu6, mish), its formulas otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from compiler.activations import MLP_KINDS, activation_of

FUNCTIONS = {
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

# MLP kind -> the function applied to the (gate) hidden layer
ACT = {kind: FUNCTIONS[activation_of(kind)] for kind in MLP_KINDS}
