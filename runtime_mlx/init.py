"""Deterministic initialisation of an OmnicModel's parameters from a seed: the scheme of `runtime_torch/init.py`,
so a seed names one set of weights in both runtimes.

  * every declared tensor that owns its storage (tied ones share their owner's) is visited in sorted full-name
    order;
  * its values depend on the seed and its name only: "normal" draws N(0, 0.02) from a CPU `torch.Generator` seeded
    with `(seed << 32) | crc32(name)` (the same draw as the torch runtime: torch is the definition of the stream),
    "zeros", "ones", "const:<v>" are what they say; values are drawn in float32 in torch layout, then converted to
    the MLX layout (`layout.py`) and cast to the parameter's dtype.
Without torch installed, "normal" falls back to `mx.random.normal` keyed by the same 64-bit seed: deterministic, but
not the torch runtime's values (`exact_across_runtimes()` says which applies).
"""
from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np

from . import layout

STD = 0.02


def tensor_seed(seed: int, name: str) -> int:
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return (seed << 32) | zlib.crc32(name.encode("utf-8"))


def exact_across_runtimes() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def draw(rule: str, shape: tuple[int, ...], seed: int, name: str) -> mx.array:
    """The float32 values of tensor `name` under `rule`, in torch layout."""
    if rule == "normal":
        try:
            import torch
        except ImportError:
            key = mx.random.key(tensor_seed(seed, name) & (2 ** 63 - 1))
            return mx.random.normal(shape, key=key) * STD
        g = torch.Generator().manual_seed(tensor_seed(seed, name))
        return mx.array(torch.empty(shape).normal_(0.0, STD, generator=g).numpy())
    if rule == "zeros":
        return mx.zeros(shape)
    if rule == "ones":
        return mx.ones(shape)
    if rule.startswith("const:"):
        try:
            v = float(rule[len("const:"):])
        except ValueError:
            raise ValueError(f"{name}: bad init rule {rule!r}; write const:<number>") from None
        return mx.full(shape, v, dtype=mx.float32)
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
    model.load_weights(new, strict=False)
    mx.eval(model.parameters())
