"""Deterministic initialisation of an OmnicModel's parameters from a seed: the scheme of `runtime_common/init.py`,
so a seed names one set of weights in both runtimes.

The scheme's `draw(rule, shape, seed, name)` (which needs torch) gives each declared tensor's float32 values in torch
layout from the seed and the tensor's full name alone; this module writes them into each array in the MLX layout
(`layout.py`) and the parameter's dtype, drawn straight into the array's memory; tied tensors are skipped (they
share their owner's).
Without torch installed, random tensors fall back to `mx.random` keyed by the same per-tensor seed:
deterministic, but not the torch runtime's values (`exact_across_runtimes()` says which applies).
"""
from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from typing import Optional

import mlx.core as mx

from runtime_common import init as scheme
from runtime_common.pool import Scratch, parallel

from . import layout


@lru_cache(maxsize=1)
def exact_across_runtimes() -> bool:
    """Whether torch is installed, so that `draw` gives the torch runtime's values (found, not imported: `initialise`
    imports it in its pool's threads while this one allocates)."""
    return importlib.util.find_spec("torch") is not None


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


#: MLX float dtype -> (the dtype MLX allocates it as, for a buffer numpy can view; torch's dtype of its values)
_CARRIERS = {mx.float32: (mx.float32, "float32"), mx.float16: (mx.float16, "float16"),
             mx.bfloat16: (mx.uint16, "bfloat16")}


def initialise(model, seed: int = 0, n_threads: Optional[int] = None) -> None:
    """Fill every owned declared parameter of `model` (an OmnicModel) from `seed`. With torch, each array is
    allocated once by MLX, in this thread (MLX is called from one thread only), while a pool of threads draws the
    values of the arrays allocated so far straight into their memory through torch views of it
    (`runtime_common/pool.py`, largest first: the values of a sequential fill), permuted to the MLX layout and cast
    on the way; no second copy. A bfloat16 array is allocated as uint16 (a buffer numpy can view) and viewed as
    bfloat16 after (the same memory). torch is imported by the pool's first draw, while this thread allocates."""
    names = [n for n in sorted(model.weight_decls) if not model.weight_decls[n].tied_to]
    sizes = [math.prod(model.weight_decls[n].shape) for n in names]
    if not exact_across_runtimes():
        new = []
        for name, x in parallel(names, lambda n: draw(model.weight_decls[n].init_rule, tuple(
                model.weight_decls[n].shape), seed, n), sizes, "initialising weights", 1):
            new.append((name, _convert(model, name, x)))
        model.assign(new)
        mx.eval(model.parameters())
        return
    import numpy as np
    arrays: dict[str, mx.array] = {}
    views: dict[str, tuple] = {}                        # name -> (numpy view of the array's memory, torch dtype)
    scratch = Scratch()

    def allocate(name: str) -> None:                    # this thread: MLX allocates the array, numpy views it
        w, dtype = model.weight_decls[name], model.param(name).dtype
        if dtype in _CARRIERS:
            carrier, torch_dtype = _CARRIERS[dtype]
            x = arrays[name] = mx.zeros(layout.mlx_shape(w.shape, model.perms[name]), dtype=carrier)
            mx.eval(x)
            views[name] = (np.asarray(x), torch_dtype)

    def make(name: str):                                # a pool thread: no MLX call
        import torch
        w = model.weight_decls[name]
        if name not in views:                           # a dtype numpy cannot view: drawn, converted by the caller
            return scheme.draw(w.init_rule, tuple(w.shape), seed, name)
        view, torch_dtype = views.pop(name)
        out = torch.from_numpy(view).view(getattr(torch, torch_dtype))
        return scheme.fill(out, tuple(w.shape), w.init_rule, seed, name, scratch, model.perms[name])

    new = []
    for name, t in parallel(names, make, sizes, "initialising weights", n_threads, prepare=allocate,
                            ahead=len(names)):     # every array is final storage: allocate as far ahead as it goes
        x = arrays.pop(name, None)
        if x is None:
            x = _convert(model, name, mx.array(t.numpy()))
            mx.eval(x)                                      # its torch and float32 copies go now
        elif x.dtype != model.param(name).dtype:
            x = x.view(model.param(name).dtype)             # bfloat16 drawn into uint16 storage: the same bytes
        new.append((name, x))
    model.assign(new)
    mx.eval(model.parameters())


def _convert(model, name: str, x: mx.array) -> mx.array:
    """Torch-layout float32 values of `name` in its MLX layout and dtype."""
    w = model.weight_decls[name]
    x = layout.to_mlx(x, w.shape, model.perms[name], source="torch", name=name)
    return x.astype(model.param(name).dtype)
