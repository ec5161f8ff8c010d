"""The one table of layout differences between torch (the canonical, on-disk layout) and MLX.

MLX convolutions are channels-last: a kernel is (out, *kernel, in / groups) where torch's is (out, in / groups,
*kernel) (mlx-lm's `sanitize` functions transpose them the same way for Mamba, Whisper, ...). Every other tensor
has the same layout in both runtimes. A conversion is a permutation of axes, looked up

  1. by (op, weight name) in `BY_NAME` (exceptions, e.g. a transposed convolution), else
  2. by (role, rank) in `BY_ROLE`: every tensor an op declares with role "conv" is a convolution kernel,
     rank 3 (Conv1d, LFM2's depthwise short convolution (D, 1, K) -> (D, K, 1)), rank 4 (Conv2d (O, I, kh, kw) ->
     (O, kh, kw, I)) or rank 5 (Conv3d, (O, I, kt, kh, kw) -> (O, kt, kh, kw, I)).

Conversion is idempotent, decided by the declared shape: an array already in the target layout is returned as is.
Where both layouts have the same shape (a 3x3 kernel on 3 channels: (O, 3, 3, 3)) the shape cannot tell, and the
caller must say where the array comes from (`source="torch"` / `"mlx"`); `weights.py` does (files hold torch's).
"""
from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx

from compiler.registry import W

Perm = tuple[int, ...]

#: torch -> MLX axis permutations of convolution kernels, by rank
BY_ROLE: dict[tuple[str, int], Perm] = {
    ("conv", 3): (0, 2, 1),            # (O, I, K)          -> (O, K, I)
    ("conv", 4): (0, 2, 3, 1),         # (O, I, kh, kw)     -> (O, kh, kw, I)
    ("conv", 5): (0, 2, 3, 4, 1),      # (O, I, kt, kh, kw) -> (O, kt, kh, kw, I)
}

#: exceptions by (op name, weight name relative to the node); none so far
BY_NAME: dict[tuple[str, str], Perm] = {}


def perm_of(op: str, name: str, w: W) -> Optional[Perm]:
    """The torch -> MLX permutation of tensor `name` of an `op` node, or None when the layouts agree."""
    p = BY_NAME.get((op, name))
    if p is None:
        p = BY_ROLE.get((w.role, len(w.shape)))
    return None if p is None or p == tuple(range(len(p))) else p


def inverse(p: Perm) -> Perm:
    inv = [0] * len(p)
    for i, j in enumerate(p):
        inv[j] = i
    return tuple(inv)


def mlx_shape(torch_shape: Sequence[int], perm: Optional[Perm]) -> tuple[int, ...]:
    s = tuple(torch_shape)
    return s if perm is None else tuple(s[i] for i in perm)


def _convert(x, torch_shape: Sequence[int], perm: Optional[Perm], to: str, source: Optional[str], name: str):
    if perm is None:
        if tuple(x.shape) != tuple(torch_shape):
            raise ValueError(f"{name}: shape {tuple(x.shape)}, declared {tuple(torch_shape)}")
        return x
    src_shape, dst_shape = tuple(torch_shape), mlx_shape(torch_shape, perm)
    p = perm
    if to == "torch":
        src_shape, dst_shape, p = dst_shape, src_shape, inverse(perm)
    have = tuple(x.shape)
    if src_shape == dst_shape and have == src_shape:     # the shape cannot tell: the caller must
        if source is None:
            raise ValueError(f"{name}: shape {have} is the same in torch and MLX layout; say source='torch' or "
                             f"'mlx'")
        return x if source == to else x.transpose(p)
    if have == dst_shape:
        return x                                     # already converted
    if have == src_shape:
        return x.transpose(p)
    raise ValueError(f"{name}: shape {have} is neither the torch layout {tuple(torch_shape)} nor the MLX layout "
                     f"{mlx_shape(torch_shape, perm)}")


def to_mlx(x: mx.array, torch_shape: Sequence[int], perm: Optional[Perm], source: Optional[str] = None,
           name: str = "tensor") -> mx.array:
    """`x` in MLX layout (no-op if it already is); `torch_shape` is the declared shape, `perm` from `perm_of`."""
    return _convert(x, torch_shape, perm, "mlx", source, name)


def to_torch(x: mx.array, torch_shape: Sequence[int], perm: Optional[Perm], source: Optional[str] = None,
             name: str = "tensor") -> mx.array:
    """`x` in torch layout (no-op if it already is)."""
    return _convert(x, torch_shape, perm, "torch", source, name)
