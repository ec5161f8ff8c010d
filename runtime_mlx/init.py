"""Deterministic initialisation of an OmnicModel's parameters from a seed: the scheme of `runtime_torch/init.py`,
so a seed names one set of weights in both runtimes.

The scheme has one definition, `runtime_torch/init.py` (which needs only torch): its `draw(rule, shape, seed, name)`
gives each declared tensor's float32 values in torch layout from the seed and the tensor's full name alone. This
module loads that file by itself (not the `runtime_torch` package), converts each tensor to the MLX layout
(`layout.py`) and casts it to the parameter's dtype; tied tensors are skipped (they share their owner's).
Without torch installed, "normal" tensors fall back to `mx.random.normal` keyed by the name: deterministic, but
not the torch runtime's values (`exact_across_runtimes()` says which applies).
"""
from __future__ import annotations

import importlib.util
import os
import zlib
from functools import lru_cache

import mlx.core as mx

from . import layout

STD = 0.02


@lru_cache(maxsize=1)
def _torch_init():
    """runtime_torch/init.py as a standalone module, or None without torch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    spec = importlib.util.find_spec("runtime_torch")
    path = os.path.join(list(spec.submodule_search_locations)[0], "init.py")
    mspec = importlib.util.spec_from_file_location("runtime_mlx._torch_init", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


def exact_across_runtimes() -> bool:
    return _torch_init() is not None


def draw(rule: str, shape: tuple[int, ...], seed: int, name: str) -> mx.array:
    """The float32 values of tensor `name` under `rule`, in torch layout."""
    ti = _torch_init()
    if ti is not None:
        return mx.array(ti.draw(rule, tuple(shape), seed, name).numpy())
    if rule == "normal":
        key = mx.random.key((seed * 0x9E3779B1 + zlib.crc32(name.encode("utf-8"))) % 2 ** 32)
        return mx.random.normal(tuple(shape), key=key) * STD
    if rule == "zeros":
        return mx.zeros(shape)
    if rule == "ones":
        return mx.ones(shape)
    if rule.startswith("const:"):
        return mx.full(shape, float(rule[len("const:"):]), dtype=mx.float32)
    raise ValueError(f"{name}: unknown init rule {rule!r} (normal, zeros, ones, const:<v>)")


def initialise(model, seed: int = 0) -> None:
    """Fill every owned declared parameter of `model` (an OmnicModel) from `seed`."""
    new = []
    for name in sorted(model.weight_decls):
        w = model.weight_decls[name]
        if w.tied_to:
            continue
        cur = model.param(name)
        x = layout.to_mlx(draw(w.init_rule, tuple(w.shape), seed, name), w.shape, model.perms[name], source="torch",
                          name=name)
        new.append((name, x.astype(cur.dtype)))
    model.assign(new)
    mx.eval(model.parameters())
