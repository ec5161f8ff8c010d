"""Deterministic initialisation of an OmnicModel's parameters from a seed: the scheme, once for both runtimes.

The scheme (the same in every runtime, so a seed names one set of weights):
  * every declared tensor that owns its storage (tied ones are skipped: they share their owner's) is visited in
    sorted full-name order;
  * each draws from its own CPU `torch.Generator` seeded with `(seed * 0x9E3779B1 + crc32(full name)) mod 2**32`
    (crc32 of the UTF-8 name; 32 bits because torch's CPU generator, an mt19937, keeps only the low 32 bits of a
    seed; the odd multiplier makes distinct seeds give distinct generators for a name), so its values depend on the
    seed and its name only: not on construction order, on the other tensors, on the device or on the dtype (values
    are drawn in float32 on the CPU, then cast and copied);
  * the declaration's `W.init_rule` says what to draw: "normal" = N(0, 0.02), "zeros", "ones", "const:<v>".
`seed` is an integer in [0, 2**32). `draw` is the scheme's definition and needs torch (imported when it is first
called, so importing this module needs no framework): runtime_torch fills its parameters with it, runtime_mlx
converts its values to MLX arrays when torch is installed.
"""
from __future__ import annotations

import zlib

STD = 0.02


def tensor_seed(seed: int, name: str) -> int:
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode("utf-8"))) % 2 ** 32


def const_value(rule: str, name: str) -> float:
    """The value of a "const:<v>" rule."""
    try:
        return float(rule[len("const:"):])
    except ValueError:
        raise ValueError(f"{name}: bad init rule {rule!r}; write const:<number>") from None


def unknown_rule(rule: str, name: str) -> ValueError:
    return ValueError(f"{name}: unknown init rule {rule!r} (normal, zeros, ones, const:<v>)")


def draw(rule: str, shape: tuple[int, ...], seed: int, name: str):
    """The float32 CPU values (a torch.Tensor, torch layout) of tensor `name` under `rule` (the module docstring)."""
    import torch
    if rule == "normal":
        g = torch.Generator().manual_seed(tensor_seed(seed, name))
        return torch.empty(shape).normal_(0.0, STD, generator=g)
    if rule == "zeros":
        return torch.zeros(shape)
    if rule == "ones":
        return torch.ones(shape)
    if rule.startswith("const:"):
        return torch.full(shape, const_value(rule, name))
    raise unknown_rule(rule, name)


def draw_into(out, rule: str, seed: int, name: str):
    """`draw(rule, out.shape, seed, name)` written into `out` (a torch tensor of that shape; returned). A float32
    contiguous CPU tensor under "normal" is filled by its generator in place, without a second buffer: the same
    values, since torch's `normal_` writes a contiguous tensor in memory order whatever its storage
    (tests/test_materialise.py checks it for every rule); any other is drawn, then cast and copied."""
    import torch
    if rule == "normal" and out.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous():
        g = torch.Generator().manual_seed(tensor_seed(seed, name))
        return out.normal_(0.0, STD, generator=g)
    return out.copy_(draw(rule, tuple(out.shape), seed, name))
