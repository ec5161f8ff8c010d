"""Activations: omnic's names, the transformers `ACT2FN` names that compute each, and the MLP kinds built on them.

One table (ACTIVATIONS) for every op and importer: the `Activation` op's `fn`, a block's plain MLP (`mlp` = the
activation's name) and gated MLP (`mlp` = GATED_KINDS[activation]: act(x W_gate) * (x W_up)). Each runtime has one
function per name (`ACT` in runtime_torch/kernels.py and runtime_mlx/kernels.py; a block reads its `act`, the
activation of its MLP kind), tested against transformers' ACT2FN.
Source: transformers/activations.py (ACT2CLS).

  gelu        x Phi(x), erf form                      gelu, gelu_python
  gelu_tanh   tanh approximation                      gelu_pytorch_tanh, gelu_new, gelu_fast, gelu_accurate
  quick_gelu  x sigmoid(1.702 x)                      quick_gelu
  relu / relu2 / relu6 / leaky_relu (slope 0.01) / silu / sigmoid / tanh / mish / identity
"""
from __future__ import annotations

from typing import Literal, Optional

# omnic activation -> the ACT2FN names that are it (equal up to float rounding)
ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "gelu": ("gelu", "gelu_python"),
    "gelu_tanh": ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_accurate"),
    "quick_gelu": ("quick_gelu",),
    "relu": ("relu",),
    "relu2": ("relu2",),
    "relu6": ("relu6",),
    "leaky_relu": ("leaky_relu",),
    "silu": ("silu", "swish"),
    "sigmoid": ("sigmoid",),
    "tanh": ("tanh",),
    "mish": ("mish",),
    "identity": ("linear",),
}

# activation -> the gated-MLP kind that applies it to the gate (the first three are the names the seed specs use)
GATED_KINDS: dict[str, str] = {"silu": "swiglu", "gelu": "geglu", "gelu_tanh": "geglu_tanh",
                               **{a: f"gated_{a}" for a in ACTIVATIONS if a not in ("silu", "gelu", "gelu_tanh")}}

ACTIVATION_NAMES = tuple(ACTIVATIONS)
GATED = tuple(GATED_KINDS.values())
MLP_KINDS = ACTIVATION_NAMES + GATED
Activation = Literal[ACTIVATION_NAMES]
MLPKind = Literal[MLP_KINDS]

_FROM_HF = {hf: ours for ours, names in ACTIVATIONS.items() for hf in names}
_OF_KIND = {**{a: a for a in ACTIVATIONS}, **{g: a for a, g in GATED_KINDS.items()}}


def activation_of(kind: str) -> str:
    """The activation an MLP kind applies (a gated kind's gate activation)."""
    return _OF_KIND[kind]


def from_hf(name: str, gated: bool) -> Optional[str]:
    """The MLP kind of transformers activation `name` (gated or plain), or None when omnic has no such one."""
    ours = _FROM_HF.get(name)
    if ours is None:
        return None
    return GATED_KINDS[ours] if gated else ours


def hf_names() -> list[str]:
    """Every ACT2FN name omnic reads, sorted (for error messages)."""
    return sorted(_FROM_HF)
