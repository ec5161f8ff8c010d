"""Deterministic initialisation of an OmnicModel's parameters from a seed: the scheme of `runtime_common/init.py`,
so a seed names one set of weights in both runtimes.

The scheme's `draw(rule, shape, seed, name)` (which needs torch) gives each declared tensor's float32 values in torch
layout from the seed and the tensor's full name alone; this module converts each tensor to the MLX layout
(`layout.py`) and casts it to the parameter's dtype; tied tensors are skipped (they share their owner's).
Without torch installed, "normal" tensors fall back to `mx.random.normal` keyed by the same per-tensor seed:
deterministic, but not the torch runtime's values (`exact_across_runtimes()` says which applies).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import mlx.core as mx

from runtime_common import init as scheme
from runtime_common.pool import parallel

from . import layout


@lru_cache(maxsize=1)
def exact_across_runtimes() -> bool:
    """Whether torch is installed, so that `draw` gives the torch runtime's values."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def draw(rule: str, shape: tuple[int, ...], seed: int, name: str) -> mx.array:
    """The float32 values of tensor `name` under `rule`, in torch layout."""
    if exact_across_runtimes():
        return mx.array(scheme.draw(rule, tuple(shape), seed, name).numpy())
    if rule == "normal":
        key = mx.random.key(scheme.tensor_seed(seed, name))
        return mx.random.normal(tuple(shape), key=key) * scheme.STD
    if rule == "zeros":
        return mx.zeros(shape)
    if rule == "ones":
        return mx.ones(shape)
    if rule.startswith("const:"):
        return mx.full(shape, scheme.const_value(rule, name), dtype=mx.float32)
    raise scheme.unknown_rule(rule, name)


def initialise(model, seed: int = 0, n_threads: Optional[int] = None) -> None:
    """Fill every owned declared parameter of `model` (an OmnicModel) from `seed`. With torch, the values are drawn
    by a pool of threads (`runtime_common/pool.py`, largest first: the values of a sequential fill) and copied into
    MLX arrays in this thread (MLX is called from one thread only)."""
    names = [n for n in sorted(model.weight_decls) if not model.weight_decls[n].tied_to]
    exact = exact_across_runtimes()

    def make(name: str):
        w = model.weight_decls[name]
        if not exact:
            return draw(w.init_rule, tuple(w.shape), seed, name)
        import torch
        return scheme.draw_into(torch.empty(tuple(w.shape)), w.init_rule, seed, name)

    sizes = [math.prod(model.weight_decls[n].shape) for n in names]
    new = []
    for name, x in parallel(names, make, sizes, "initialising weights", n_threads if exact else 1):
        w = model.weight_decls[name]
        x = mx.array(x.numpy()) if exact else x                           # a copy; the torch tensor goes
        x = layout.to_mlx(x, w.shape, model.perms[name], source="torch", name=name).astype(model.param(name).dtype)
        mx.eval(x)
        new.append((name, x))
    model.assign(new)
    mx.eval(model.parameters())
