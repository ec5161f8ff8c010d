"""Deterministic initialisation of an OmnicModel's parameters from a seed: the scheme, once for both runtimes.

The scheme (the same in every runtime, so a seed names one set of weights):
  * every declared tensor that owns its storage (tied ones are skipped: they share their owner's) is visited in
    sorted full-name order;
  * each draws from its own CPU `torch.Generator` seeded with `(seed * 0x9E3779B1 + crc32(full name)) mod 2**32`
    (crc32 of the UTF-8 name; 32 bits because torch's CPU generator, an mt19937, keeps only the low 32 bits of a
    seed; the odd multiplier makes distinct seeds give distinct generators for a name), so its values depend on the
    seed and its name only: not on construction order, on the other tensors, on the device or on the dtype (values
    are drawn in float32 on the CPU, then cast and copied);
  * the declaration's `W.init_rule` says what to draw, a rule of `RULES` written "<kind>" or "<kind>:<a>:<b>...":
    the distributions are data here, each one line of `RULES` (its arguments and what it draws), each drawn by
    `draw` below.
`seed` is an integer in [0, 2**32). `draw` is the scheme's definition and needs torch (imported when it is first
called, so importing this module needs no framework): runtime_torch fills its parameters with it, runtime_mlx
converts its values to MLX arrays when torch is installed.
"""
from __future__ import annotations

import math
import zlib

STD = 0.02

#: kind -> (argument names, what it draws); a rule is "<kind>" or "<kind>:<arg>:<arg>..." with these arguments
RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "normal": ((), f"N(0, {STD}) from the tensor's generator"),
    "zeros": ((), "0"),
    "ones": ((), "1"),
    "const": (("value",), "the value"),
    "log_arange": ((), "log(1), log(2), ..., log(n) over the n elements (Mamba-2's A_log: A = 1 .. H)"),
    "inv_softplus_log_uniform": (
        ("low", "high", "floor"),
        "softplus^-1(dt), dt = exp(u (log high - log low) + log low), u uniform in [0, 1) from the tensor's "
        "generator, at least floor (Mamba-2's dt_bias, as transformers' Mamba2Mixer.init_mamba2_weights)"),
}


def tensor_seed(seed: int, name: str) -> int:
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode("utf-8"))) % 2 ** 32


def parse(rule: str, name: str) -> tuple[str, tuple[float, ...]]:
    """(kind, arguments) of a rule; a ValueError naming the tensor for an unknown kind or bad arguments."""
    kind, *args = rule.split(":")
    if kind not in RULES:
        raise ValueError(f"{name}: unknown init rule {rule!r} ("
                         + ", ".join(":".join((k, *a)) for k, (a, _) in RULES.items()) + ")")
    want = RULES[kind][0]
    try:
        values = tuple(float(a) for a in args)
    except ValueError:
        values = None
    if values is None or len(values) != len(want):
        raise ValueError(f"{name}: bad init rule {rule!r}; write {':'.join((kind, *('<' + a + '>' for a in want)))}")
    return kind, values


def dt_range(low: float, high: float) -> tuple[float, float]:
    """log(low), log(high) - log(low): the affine map of `inv_softplus_log_uniform`'s uniform draw, as transformers
    computes it (Python floats, then one multiply and one add in float32)."""
    return math.log(low), math.log(high) - math.log(low)


def draw(rule: str, shape: tuple[int, ...], seed: int, name: str):
    """The float32 CPU values (a torch.Tensor, torch layout) of tensor `name` under `rule` (`RULES`)."""
    import torch
    kind, args = parse(rule, name)
    if kind == "normal":
        return torch.empty(shape).normal_(0.0, STD, generator=_generator(seed, name))
    if kind in ("zeros", "ones", "const"):
        return torch.full(shape, args[0] if kind == "const" else float(kind == "ones"))
    if kind == "log_arange":
        n = math.prod(shape)
        return torch.log(torch.arange(1, n + 1, dtype=torch.float32)).reshape(shape)
    low, high, floor = args                                   # inv_softplus_log_uniform
    log_low, span = dt_range(low, high)
    dt = torch.exp(torch.rand(shape, generator=_generator(seed, name)) * span + log_low).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))                  # softplus^-1(dt)


def _generator(seed: int, name: str):
    import torch
    return torch.Generator().manual_seed(tensor_seed(seed, name))

def draw_into(out, rule: str, seed: int, name: str):
    """`draw(rule, out.shape, seed, name)` written into `out` (a torch tensor of that shape; returned). A float32
    contiguous CPU tensor under "normal" is filled by its generator in place, without a second buffer: the same
    values, since torch's `normal_` writes a contiguous tensor in memory order whatever its storage
    (tests/test_materialise.py checks it for every rule); any other is drawn, then cast and copied."""
    import torch
    if rule == "normal" and out.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous():
        return out.normal_(0.0, STD, generator=_generator(seed, name))
    return out.copy_(draw(rule, tuple(out.shape), seed, name))


def fill(out, shape: tuple, rule: str, seed: int, name: str, scratch, perm=None):
    """`out` (a torch tensor: the final storage, any dtype and device, the declared `shape` permuted by `perm`) set
    to `name`'s values (returned): drawn in place when it is float32 on the CPU in the declared layout, else drawn
    in float32 into this thread's buffer of `scratch` (runtime_common.pool.Scratch) and copied in (cast, permuted,
    moved) on the way: one pass over `out`, no other full-size copy."""
    import torch
    if perm is None and out.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous():
        return draw_into(out, rule, seed, name)
    buf = scratch.get(math.prod(shape), lambda n: torch.empty(n, dtype=torch.float32))
    values = draw_into(buf.view(tuple(shape)), rule, seed, name)
    return out.copy_(values if perm is None else values.permute(perm))
