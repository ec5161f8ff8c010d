"""Rotary inverse frequencies of every scaling type, computed once for both runtimes (plain Python, float32 values).

`inv_freq(theta, dim, scaling, seq_len)` is transformers 5.x's `ROPE_INIT_FUNCTIONS[type]` (modeling_rope_utils.py)
in the same float32 operations, in the same order: each +, -, *, / is taken in float64 and rounded to float32
(`f32`), which is exactly IEEE float32 arithmetic; powers are taken in float64 and rounded (torch's scalar ** tensor
agrees with that to 1 ulp). The result is a list of Python floats that are float32 values, so both runtimes build
identical float32 tensors from it. `attention_factor` (compiler/rope.py) multiplies cos and sin. The runtimes turn
these into cos / sin tables (angles = positions x inv_freq in float32, then cos, sin, times the factor, cast) and
never derive frequencies themselves.

Two types depend on the sequence: transformers' `dynamic_rope_update` recomputes them from seq_len = the largest
position of the forward call + 1. `dynamic` uses max(seq_len, max_position_embeddings); `longrope` the long factors
when seq_len > original_max_position_embeddings, else the short ones. `effective_length(scaling, seq_len)` is the
least length with the same frequencies (None: the length changes nothing), so a runtime passes the position of the
call's last token + 1, as transformers does, and caches tables per effective length (keys already cached keep the
frequencies they were rotated with, as in transformers).
"""
from __future__ import annotations

import math
import struct
from typing import Optional

from compiler.rope import RopeScaling, attention_factor

__all__ = ["inv_freq", "attention_factor", "effective_length", "f32"]

_F = struct.Struct("f")


def f32(x: float) -> float:
    """x rounded to the nearest float32."""
    return _F.unpack(_F.pack(x))[0]


def exponents(dim: int) -> list[float]:
    """arange(0, dim, 2) / dim in float32."""
    return [f32(i / dim) for i in range(0, dim, 2)]


def _powers(theta: float, dim: int) -> list[float]:
    """theta^(arange(0, dim, 2) / dim), float32 values."""
    t = f32(theta)
    return [f32(t ** e) for e in exponents(dim)]


def _base_inv(theta: float, dim: int) -> list[float]:
    """1 / theta^(arange(0, dim, 2) / dim): transformers' default inverse frequencies."""
    return [f32(1.0 / p) for p in _powers(theta, dim)]


def effective_length(s: Optional[RopeScaling], seq_len: Optional[int]) -> Optional[int]:
    """The least sequence length whose frequencies under `s` are seq_len's (None when the length changes nothing):
    a runtime's cache key, and what it passes to `inv_freq`."""
    if s is None or s.rope_type not in ("dynamic", "longrope") or seq_len is None:
        return None
    if s.rope_type == "dynamic":
        return max(seq_len, s.max_position_embeddings)
    orig = s.original_max_position_embeddings
    return orig + 1 if seq_len > orig else orig


def inv_freq(theta: float, dim: int, s: Optional[RopeScaling] = None, seq_len: Optional[int] = None) -> list[float]:
    """dim / 2 inverse frequencies (float32 values) for `dim` rotated features; `s` resolved (compiler.rope)."""
    kind = "default" if s is None else s.rope_type
    if kind == "default":
        return _base_inv(theta, dim)
    if kind == "linear":
        factor = f32(s.factor)
        return [f32(v / factor) for v in _base_inv(theta, dim)]
    if kind == "dynamic":
        n = max(seq_len or 0, s.max_position_embeddings)
        base = theta * ((s.factor * n / s.max_position_embeddings) - (s.factor - 1)) ** (dim / (dim - 2))
        return _base_inv(base, dim)
    if kind == "llama3":
        return _llama3(_base_inv(theta, dim), s)
    if kind == "yarn":
        return _yarn(theta, dim, s)
    if kind == "longrope":
        long = seq_len is not None and seq_len > s.original_max_position_embeddings
        ext = s.long_factor if long else s.short_factor
        return [f32(1.0 / f32(f32(e) * p)) for e, p in zip(ext, _powers(theta, dim))]
    raise ValueError(f"unknown rope type {kind!r}")


def _llama3(inv: list[float], s: RopeScaling) -> list[float]:
    factor, lo = f32(s.factor), f32(s.low_freq_factor)
    old = s.original_max_position_embeddings
    low_wavelen, high_wavelen = f32(old / s.low_freq_factor), f32(old / s.high_freq_factor)
    two_pi, span = f32(2 * math.pi), f32(s.high_freq_factor - s.low_freq_factor)
    out = []
    for v in inv:
        wavelen = f32(two_pi / v)
        scaled = f32(v / factor) if wavelen > low_wavelen else v
        if not wavelen < high_wavelen and not wavelen > low_wavelen:          # medium: the smooth ramp
            smooth = f32(f32(f32(f32(old) / wavelen) - lo) / span)
            scaled = f32(f32(f32(f32(1.0 - smooth) * scaled) / factor) + f32(smooth * scaled))
        out.append(scaled)
    return out


def _yarn(theta: float, dim: int, s: RopeScaling) -> list[float]:
    orig = s.original_max_position_embeddings

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001                                                        # transformers' guard against 0 / 0
    lo32, span, factor = f32(low), f32(high - low), f32(s.factor)
    out = []
    for i, p in enumerate(_powers(theta, dim)):
        ramp = min(max(f32(f32(float(i) - lo32) / span), 0.0), 1.0)
        extra = f32(1.0 - ramp)
        extrapolation, interpolation = f32(1.0 / p), f32(1.0 / f32(factor * p))
        out.append(f32(f32(interpolation * f32(1.0 - extra)) + f32(extrapolation * extra)))
    return out
