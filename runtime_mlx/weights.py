"""Weights in and out of an MLX OmnicModel: safetensors in torch layout, so one file serves both runtimes (the mirror
of `runtime_torch/weights.py`).

  save_weights(model, path)                    every owned tensor once, under its full name, converted to the torch
                                               layout (`layout.py`); tied tensors only under their owner's name
  load_weights(model, path, strict, cast)      the reverse: names and shapes are checked against the torch layout
                                               the op declares, then converted to MLX's; tied tensors stay shared
  load_state_dict_mapped(model, tensors, mapping, strict, cast)
                                               a checkpoint's {name: array} renamed by data: `mapping` is a key map
                                               (compiler/importers/keymaps.py): (regex, replacement) pairs applied in
                                               order with re.sub (None drops), Merge and Split rules (per-expert
                                               tensors stacked with mx.stack: no torch)
  load_checkpoint(model, path, mapping, strict, cast=True)
                                               a checkpoint file or folder other code wrote (single or sharded
                                               safetensors) through a key map, tensor by tensor with MLX's own
                                               reader (`mx.load`'s lazy arrays, each read when evaluated; numpy's
                                               memory map for a file MLX cannot open), each cast to the model's
                                               dtype; never imports torch
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
from typing import Mapping, Sequence

import mlx.core as mx
import numpy as np
from safetensors import TensorSpec, serialize_file

from runtime_common import checkpoint as ckpt
from runtime_common.progress import track
from runtime_common.weights import LoadResult, WeightsMismatch, label

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
    return _load_planned(model, ckpt.read_header(path), (), strict, cast, path)


def load_state_dict_mapped(model, tensors: Mapping[str, mx.array], mapping: Sequence, strict: bool = True,
                           cast: bool = False) -> LoadResult:
    """Load a checkpoint's arrays (torch layout) under names rewritten by the key map `mapping` (module docstring)."""
    refs = {}
    for n, t in tensors.items():
        a = _array(t)
        refs[n] = ckpt.Ref(n, tuple(a.shape), _ST[a.dtype], value=a)
    return _load_planned(model, refs, mapping, strict, cast, "the mapped checkpoint")


def load_checkpoint(model, path: str | os.PathLike, mapping: Sequence = (), strict: bool = True,
                    cast: bool = True) -> LoadResult:
    """Load a safetensors file, a sharded checkpoint's index, or a folder holding either, through the key map
    `mapping`; every problem is reported at once before any tensor is read."""
    return _load_planned(model, ckpt.sources_of(path), mapping, strict, cast, os.fspath(path))


def _array(t) -> mx.array:
    return t if isinstance(t, mx.array) else mx.array(t)


# safetensors dtype <-> MLX dtype
_MX = {"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16, "F64": mx.float64, "I64": mx.int64,
       "I32": mx.int32, "I16": mx.int16, "I8": mx.int8, "U8": mx.uint8, "BOOL": mx.bool_}
_ST = {v: k for k, v in _MX.items()}


class _Files:
    """Reads a load's tensors with MLX's own safetensors reader: `mx.load` of a file gives lazy arrays, each read
    (straight into its own buffer, no numpy copy) when it is evaluated. One `mx.load` per file is kept; each array is
    handed out once and dropped from it, so an array read and then cast or transposed is freed with its last use (a
    tensor asked for again, a split's source or a tie being compared, loads the file's header anew). A file MLX cannot
    open (a dtype it does not know) is read tensor by tensor through numpy (`ckpt.tensor_bytes`)."""

    def __init__(self):
        self.open: dict[str, dict] = {}
        self.numpy: set[str] = set()

    def read(self, ref: ckpt.Ref) -> mx.array:
        if ref.value is not None:
            return ref.value
        if ref.dtype not in _MX:
            raise ValueError(f"{ref.file}: tensor {ref.name} is {ref.dtype}, which MLX cannot hold")
        if ref.file not in self.numpy:
            arrays = self.open.get(ref.file)
            if arrays is None or ref.name not in arrays:
                try:
                    arrays = self.open[ref.file] = mx.load(ref.file, format="safetensors")
                except (RuntimeError, ValueError):
                    self.numpy.add(ref.file)
            if ref.file not in self.numpy:
                x = arrays.pop(ref.name, None)
                if x is not None and x.dtype == _MX[ref.dtype] and tuple(x.shape) == ref.shape:
                    return x
        return _read_numpy(ref)

    def framework(self) -> ckpt.Framework:
        return ckpt.Framework(read=self.read, cat=lambda xs: mx.concatenate(xs, 0), stack=lambda xs: mx.stack(xs, 0),
                              narrow=lambda x, d, s, n: mx.split(x, [s, s + n], axis=d)[1])


def _read_numpy(ref: ckpt.Ref) -> mx.array:
    a = ckpt.tensor_bytes(ref)
    x = mx.array(a)                                    # a copy; the file's map goes with `a`
    del a
    return x.view(mx.bfloat16) if ref.dtype == "BF16" else x


def _load_planned(model, refs: dict, mapping: Sequence, strict: bool, cast: bool, source: str) -> LoadResult:
    shapes = {n: tuple(w.shape) for n, w in model.weight_decls.items()}
    planned, problems = ckpt.plan(refs, mapping, shapes)
    fw = _Files().framework()
    entries = {new: (tuple(src.shape), _MX.get(src.dtype), (lambda s=src: ckpt.materialise(s, fw)), src.origin)
               for new, src in planned.items()}
    return _assign(model, entries, strict, cast, source, problems)


def _dt(d: mx.Dtype) -> str:
    return str(d).removeprefix("mlx.core.")


#: tensors are evaluated (read, cast, transposed) in groups of about this many bytes: one `mx.eval` per tensor cost
#: about half of a 7.6 GB load (MLX reads a group's tensors at once), while a group holds at most this much of the
#: file's values beside the model's when they are cast (none when they are not: each read array is the parameter)
GROUP_BYTES = 256 << 20


def _assign(model, entries: dict[str, tuple], strict: bool, cast: bool, source: str, other: list[str]) -> LoadResult:
    """`entries`: {model name: (shape, MLX dtype, read() -> array, checkpoint name)}."""
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
            shape, dtype, _, origin = entries[n]
            if shape != want:
                shapes.append(f"{label(n, origin)}: checkpoint {shape}, model {want} (torch layout)")
            elif dtype != cur.dtype and not cast:
                dtypes.append(f"{label(n, origin)}: checkpoint {_dt(dtype)}, model {_dt(cur.dtype)}")
        if len(present) > 1 and not shapes:
            first = entries[present[0]][2]()
            other += [f"tied tensors {present[0]} and {n} differ in the checkpoint"
                      for n in present[1:] if not mx.array_equal(entries[n][2](), first).item()]
        plan.append((owner, present[0]))
    unexpected = sorted(label(n, e[3]) for n, e in entries.items() if n not in decls)
    if shapes or dtypes or other or (strict and (missing or unexpected)):
        raise WeightsMismatch(source, missing if strict else [], unexpected if strict else [], shapes, dtypes, other)
    sizes = [int(np.prod(decls[o].shape)) for o, _ in plan]
    group: list[mx.array] = []
    held = 0
    for owner, fname in track(plan, "loading weights", sizes):     # read, convert, assign; evaluated in groups
        w, cur = decls[owner], model.param(owner)
        x = layout.to_mlx(entries[fname][2](), w.shape, model.perms[owner], source="torch", name=owner)
        x = x.astype(cur.dtype) if x.dtype != cur.dtype else x
        model.assign([(owner, x)])
        group.append(x)
        held += x.nbytes
        if held >= GROUP_BYTES:
            mx.eval(group)
            group, held = [], 0
    mx.eval(group)
    mx.eval(model.parameters())
    return LoadResult(missing, unexpected)
