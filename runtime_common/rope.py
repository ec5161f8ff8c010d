"""Rotary inverse frequencies of every scaling type, computed once for both runtimes (numpy, float32).

`inv_freq(theta, dim, scaling, seq_len)` is transformers 5.x's `ROPE_INIT_FUNCTIONS[type]` (modeling_rope_utils.py)
written with numpy in the same float32 operations, in the same order, so that both runtimes start from the same
frequencies as transformers; `attention_factor` (compiler/rope.py) multiplies cos and sin. The runtimes turn these
into cos / sin tables (angles = positions x inv_freq in float32, then cos, sin, times the factor, cast), and never
derive frequencies themselves.

Two types depend on the sequence: transformers' `dynamic_rope_update` recomputes them from seq_len = the largest
position of the forward call + 1. `dynamic` uses max(seq_len, max_position_embeddings); `longrope` the long factors
when seq_len > original_max_position_embeddings, else the short ones. `depends_on_length` says when a runtime must
pass seq_len (a decoding runtime passes the position of the last token of the call + 1, as transformers does; the
keys already cached keep the frequencies they were rotated with, as in transformers).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from compiler.rope import RopeScaling, attention_factor

__all__ = ["inv_freq", "attention_factor", "depends_on_length", "table_key"]

F32 = np.float32


def _powers(theta: float, dim: int) -> np.ndarray:
    """theta^(arange(0, dim, 2) / dim) in float32: exponents in float32 as transformers forms them, the power taken
    in float64 and rounded (torch's scalar ** tensor agrees with this to 1 ulp, float32 powf only to 1-2)."""
    e = np.arange(0, dim, 2).astype(F32) / F32(dim)
    return (np.float64(theta) ** e.astype(np.float64)).astype(F32)


def _base_inv(theta: float, dim: int) -> np.ndarray:
    """1 / theta^(arange(0, dim, 2) / dim), float32: transformers' default inverse frequencies."""
    return F32(1.0) / _powers(theta, dim)


def depends_on_length(s: Optional[RopeScaling]) -> bool:
    return s is not None and s.rope_type in ("dynamic", "longrope")


def table_key(s: Optional[RopeScaling], seq_len: Optional[int]) -> Optional[int]:
    """The part of seq_len that changes the frequencies of `s` (None when nothing does): a runtime's cache key."""
    if s is None or s.rope_type == "default" or not depends_on_length(s) or seq_len is None:
        return None
    if s.rope_type == "dynamic":
        return max(seq_len, s.max_position_embeddings)
    return int(seq_len > s.original_max_position_embeddings)


def inv_freq(theta: float, dim: int, s: Optional[RopeScaling] = None, seq_len: Optional[int] = None) -> np.ndarray:
    """(dim / 2,) float32 inverse frequencies for `dim` rotated features; `s` resolved (compiler.rope)."""
    kind = "default" if s is None else s.rope_type
    if kind == "default":
        return _base_inv(theta, dim)
    if kind == "linear":
        return _base_inv(theta, dim) / F32(s.factor)
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
        ext = np.asarray(s.long_factor if long else s.short_factor, dtype=F32)
        return F32(1.0) / (ext * _powers(theta, dim))
    raise ValueError(f"unknown rope type {kind!r}")


def _llama3(inv: np.ndarray, s: RopeScaling) -> np.ndarray:
    factor, lo, hi = F32(s.factor), s.low_freq_factor, s.high_freq_factor
    old = s.original_max_position_embeddings
    low_wavelen, high_wavelen = old / lo, old / hi
    wavelen = F32(2 * math.pi) / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (F32(old) / wavelen - F32(lo)) / F32(hi - lo)
    smoothed = (F32(1) - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(F32)


def _yarn(theta: float, dim: int, s: RopeScaling) -> np.ndarray:
    factor, orig = s.factor, s.original_max_position_embeddings

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001                                                        # transformers' guard against 0 / 0
    ramp = np.clip((np.arange(dim // 2).astype(F32) - F32(low)) / F32(high - low), F32(0), F32(1))
    pos_freqs = _powers(theta, dim)
    extrapolation, interpolation = F32(1.0) / pos_freqs, F32(1.0) / (F32(factor) * pos_freqs)
    extra = F32(1) - ramp
    return (interpolation * (F32(1) - extra) + extrapolation * extra).astype(F32)
