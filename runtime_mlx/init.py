"""Deterministic initialisation of an OmnicModel's parameters from a seed: the scheme of `runtime_common/init.py`,
so a seed names one set of weights in both runtimes.

The scheme's `draw(rule, shape, seed, name)` (which needs torch) gives each declared tensor's float32 values in torch
layout from the seed and the tensor's full name alone; this module converts each tensor to the MLX layout
(`layout.py`) and casts it to the parameter's dtype; tied tensors are skipped (they share their owner's).
Without torch installed, random tensors fall back to `mx.random` keyed by the same per-tensor seed:
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
    """The float32 values of tensor `name` under `rule` (runtime_common/init.py's `RULES`), in torch layout."""
    if exact_across_runtimes():
        return mx.array(scheme.draw(rule, tuple(shape), seed, name).numpy())
    kind, args = scheme.parse(rule, name)
    key = mx.random.key(scheme.tensor_seed(seed, name))
    if kind == "normal":
        return mx.random.normal(tuple(shape), key=key) * scheme.STD
    if kind in ("zeros", "ones", "const"):
        return mx.full(shape, args[0] if kind == "const" else float(kind == "ones"), dtype=mx.float32)
    if kind == "log_arange":
        return mx.log(mx.arange(1, math.prod(shape) + 1, dtype=mx.float32)).reshape(shape)
    low, high, floor = args                                   # inv_softplus_log_uniform
    log_low, span = scheme.dt_range(low, high)
    dt = mx.maximum(mx.exp(mx.random.uniform(shape=tuple(shape), key=key) * span + log_low), floor)
    return dt + mx.log(-mx.expm1(-dt))                        # softplus^-1(dt)


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
