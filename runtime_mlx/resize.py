"""Grid resizing as torch computes it, written as per-axis weight matrices.

Every resize the ops use is separable with sizes fixed at compile time, so it is `out = My @ grid @ Mx^T` with
(out, in) matrices computed once here, in float64, from the formulas of ATen (aten/src/ATen/native/UpSample.h and
cpu/UpSampleKernel.cpp, align_corners=False, sizes given (scale = in / out)):
  bilinear           src = max(scale (i + 0.5) - 0.5, 0); neighbours floor(src) and the next (clamped), linear
                     weights;
  bicubic            src = scale (i + 0.5) - 0.5 (not clamped); four neighbours floor(src) - 1 .. + 2 clamped to
                     the edge; Keys cubic convolution with A = -0.75;
  antialias (both)   torch's `_upsample_*_aa`: support = (taps / 2) * max(scale, 1), centre scale (i + 0.5), the
                     filter (triangle; cubic with a = -0.5) on (j - centre + 0.5) / max(scale, 1), normalised;
  area               adaptive average pooling: rows floor(i in / out) .. ceil((i + 1) in / out).
`apply(x, my, mx_)` resizes x (..., h, w, D) channels-last.
"""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np


def _cubic1(x: float, A: float) -> float:
    return ((A + 2) * x - (A + 3)) * x * x + 1


def _cubic2(x: float, A: float) -> float:
    return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A


def _aa_filter(kind: str, x: float) -> float:
    x = abs(x)
    if kind == "bilinear":
        return 1.0 - x if x < 1.0 else 0.0
    a = -0.5
    if x < 1.0:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def matrix(n_in: int, n_out: int, mode: str, antialias: bool = False) -> np.ndarray:
    """(n_out, n_in) float64 weights of a 1-D resize (see the module docstring)."""
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    if mode == "area":
        for i in range(n_out):
            a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
            m[i, a:b] = 1.0 / (b - a)
        return m
    if antialias and mode in ("bilinear", "bicubic"):
        taps = 2 if mode == "bilinear" else 4
        support = taps * 0.5 * scale if scale >= 1.0 else taps * 0.5
        inv = 1.0 / scale if scale >= 1.0 else 1.0
        for i in range(n_out):
            centre = scale * (i + 0.5)
            lo = max(int(centre - support + 0.5), 0)
            hi = min(int(centre + support + 0.5), n_in)
            w = np.array([_aa_filter(mode, (j + lo - centre + 0.5) * inv) for j in range(hi - lo)])
            total = w.sum()
            m[i, lo:hi] = w / total if total != 0 else w
        return m
    for i in range(n_out):
        if mode == "bilinear":
            src = max(scale * (i + 0.5) - 0.5, 0.0)
            j = int(src)
            lam = min(max(src - j, 0.0), 1.0)
            m[i, j] += 1.0 - lam
            m[i, min(j + 1, n_in - 1)] += lam
        elif mode == "bicubic":
            src = scale * (i + 0.5) - 0.5
            j = math.floor(src)
            t = src - j
            A = -0.75
            coeffs = (_cubic2(t + 1.0, A), _cubic1(t, A), _cubic1(1.0 - t, A), _cubic2(2.0 - t, A))
            for k, c in enumerate(coeffs):
                m[i, min(max(j - 1 + k, 0), n_in - 1)] += c
        else:
            raise ValueError(f"unknown resize mode {mode!r}")
    return m


def matrices(src: tuple[int, int], dst: tuple[int, int], mode: str, antialias: bool = False):
    """(My (H, h), Mx (W, w)) as float32 MLX arrays for a grid (h, w) -> (H, W)."""
    return (mx.array(matrix(src[0], dst[0], mode, antialias).astype(np.float32)),
            mx.array(matrix(src[1], dst[1], mode, antialias).astype(np.float32)))


def apply(x: mx.array, my: mx.array, mx_: mx.array) -> mx.array:
    """x (..., h, w, D) -> (..., H, W, D), computed in x's dtype."""
    my, mx_ = my.astype(x.dtype), mx_.astype(x.dtype)
    *lead, h, w, d = x.shape
    x = (my @ x.reshape(*lead, h, w * d)).reshape(*lead, my.shape[0], w, d)   # rows: (..., H, w, D)
    return mx_ @ x                                                            # columns: (..., H, W, D)
