"""Weights in and out of an MLX OmnicModel: safetensors in torch layout, so one file serves both runtimes (the mirror
of `runtime_torch/weights.py`).

  save_weights(model, path)                    every owned tensor once, under its full name, converted to the torch
                                               layout (`layout.py`); tied tensors only under their owner's name
  load_weights(model, path, strict, cast)      the reverse: names and shapes are checked against the torch layout
                                               the op declares, then converted to MLX's; tied tensors stay shared
  load_state_dict_mapped(model, tensors, mapping, strict, cast)
                                               a checkpoint's {name: array} renamed by data: `mapping` is a list of
                                               (regex, replacement) pairs applied in order with re.sub to each
                                               checkpoint name; a replacement of None drops the names it matches
Loading checks everything before it assigns anything, and reports every problem at once in a `WeightsMismatch`
(a ValueError): missing, unexpected, mis-shaped and (unless `cast=True`) mis-typed tensors, and names that collide
after renaming. Shapes must be the declared torch shapes exactly: a file in MLX layout is refused (files are torch's),
except for kernels whose two layouts have the same shape (a 3x3 kernel on 3 channels), which cannot be told apart.
With `strict=False` missing and unexpected tensors are returned instead of raised; wrong shapes and dtypes always
raise. A tie group (an owner and the tensors tied to it) needs one of its names in the file; if several are there
they must be equal.
The framework-free parts (`WeightsMismatch`, `LoadResult`, `map_names`) are `runtime_common/weights.py`.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import mlx.core as mx
import numpy as np
from safetensors import TensorSpec, serialize_file

from runtime_common.weights import LoadResult, WeightsMismatch, label, map_names

from . import layout


def torch_layout_weights(model) -> dict[str, mx.array]:
    """{full name: array in torch layout} of every owned tensor, sorted by name (tied tensors at their owner)."""
    out = {}
    for name in sorted(model.weight_decls):
        w = model.weight_decls[name]
        if w.tied_to:
            continue
        out[name] = layout.to_torch(model.param(name), w.shape, model.perms[name], source="mlx", name=name)
    return out


# MLX dtype -> (safetensors dtype name, numpy dtype of the same width to carry the bytes)
_SAVE = {mx.float32: ("float32", np.float32), mx.float16: ("float16", np.float16),
         mx.bfloat16: ("bfloat16", np.uint16), mx.float64: ("float64", np.float64),
         mx.int64: ("int64", np.int64), mx.int32: ("int32", np.int32), mx.int16: ("int16", np.int16),
         mx.int8: ("int8", np.int8), mx.uint8: ("uint8", np.uint8), mx.bool_: ("bool", np.bool_)}


def save_weights(model, path: str | os.PathLike) -> None:
    """Write the model's weights to a safetensors file in torch layout, each tied tensor once (its owner's name).

    Written by the same serializer and with the same metadata as `runtime_torch.save_weights`, so equal weights give
    byte-identical files from either runtime."""
    arrays = torch_layout_weights(model)
    mx.eval(list(arrays.values()))
    keep, specs = [], {}
    for name, x in arrays.items():
        st_dtype, np_dtype = _SAVE[x.dtype]
        a = np.ascontiguousarray(np.asarray(x.view(mx.uint16) if x.dtype == mx.bfloat16 else x))
        keep.append(a)
        specs[name] = TensorSpec(dtype=st_dtype, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
    serialize_file(specs, os.fspath(path), metadata={"format": "pt"})
    del keep


def load_weights(model, path: str | os.PathLike, strict: bool = True, cast: bool = False) -> LoadResult:
    """Load a safetensors file written by either runtime's `save_weights` (or any with the model's names)."""
    path = os.fspath(path)
    tensors = mx.load(path, format="safetensors")
    return _assign(model, {n: (t, n) for n, t in tensors.items()}, strict, cast, path, [])


def load_state_dict_mapped(model, tensors: Mapping[str, mx.array], mapping: Sequence[tuple[str, Optional[str]]],
                           strict: bool = True, cast: bool = False) -> LoadResult:
    """Load a checkpoint's arrays (torch layout) under names rewritten by `mapping` (see the module docstring)."""
    renamed, clashes = map_names(tensors, mapping)
    entries = {new: (_array(tensors[old]), old) for new, old in renamed.items()}
    return _assign(model, entries, strict, cast, "the mapped checkpoint", clashes)


def _array(t) -> mx.array:
    return t if isinstance(t, mx.array) else mx.array(t)


def _dt(d: mx.Dtype) -> str:
    return str(d).removeprefix("mlx.core.")


def _assign(model, entries: dict[str, tuple[mx.array, str]], strict: bool, cast: bool, source: str,
            other: list[str]) -> LoadResult:
    decls, ties = model.weight_decls, model.ties
    groups: dict[str, list[str]] = {}
    for name in decls:
        groups.setdefault(ties.get(name, name), []).append(name)
    missing, shapes, dtypes = [], [], []
    plan: list[tuple[str, str]] = []                   # (owner, file name to read)
    for owner in sorted(groups):
        members = sorted(groups[owner], key=lambda n: (n != owner, n))
        present = [n for n in members if n in entries]
        want = tuple(decls[owner].shape)
        cur = model.param(owner)
        if not present:
            missing.append(f"{owner} {want}")
            continue
        for n in present:
            t, origin = entries[n]
            if tuple(t.shape) != want:
                shapes.append(f"{label(n, origin)}: checkpoint {tuple(t.shape)}, model {want} (torch layout)")
            elif t.dtype != cur.dtype and not cast:
                dtypes.append(f"{label(n, origin)}: checkpoint {_dt(t.dtype)}, model {_dt(cur.dtype)}")
        if len(present) > 1 and not shapes:
            first = entries[present[0]][0]
            other += [f"tied tensors {present[0]} and {n} differ in the checkpoint"
                      for n in present[1:] if not mx.array_equal(entries[n][0], first).item()]
        plan.append((owner, present[0]))
    unexpected = sorted(label(n, o) for n, (_, o) in entries.items() if n not in decls)
    if shapes or dtypes or other or (strict and (missing or unexpected)):
        raise WeightsMismatch(source, missing if strict else [], unexpected if strict else [], shapes, dtypes, other)
    new = []
    for owner, fname in plan:
        w, cur = decls[owner], model.param(owner)
        x = layout.to_mlx(entries[fname][0], w.shape, model.perms[owner], source="torch", name=owner)
        new.append((owner, x.astype(cur.dtype) if x.dtype != cur.dtype else x))
    model.assign(new)
    mx.eval(model.parameters())
    return LoadResult(missing, unexpected)
