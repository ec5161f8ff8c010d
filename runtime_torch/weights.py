"""Weights in and out of an OmnicModel: safetensors files only (never pickle), and renamed checkpoints.

  save_weights(model, path)                    every state-dict tensor once: tied tensors under their owner's name
  load_weights(model, path, strict, cast)      the reverse; tied tensors come back shared
  load_state_dict_mapped(model, tensors, mapping, strict, cast)
                                               a checkpoint's {name: tensor} renamed by data: `mapping` is a key map
                                               (compiler/importers/keymaps.py): (regex, replacement) pairs applied in
                                               order with re.sub (None drops), Merge and Split rules
  load_checkpoint(model, path, mapping, strict, cast=True)
                                               a checkpoint file or folder other code wrote (single or sharded
                                               safetensors) through a key map, tensor by tensor from memory-mapped
                                               files, each cast to the model's dtype (bf16/fp16/fp32 either way)
Loading checks everything before it copies anything, and reports every problem at once in a `WeightsMismatch`
(a ValueError): missing, unexpected, mis-shaped and (unless `cast=True`) mis-typed tensors, and names that collide
after renaming. Shapes must match exactly (nothing is broadcast or truncated). With `strict=False` missing and
unexpected tensors are returned instead of raised; wrong shapes and dtypes always raise. A tie group (an owner and
the tensors tied to it) needs one of its names in the file; if several are there they must be equal. A model built
on the meta device gets the loaded tensors themselves (no second copy).
The framework-free parts (`WeightsMismatch`, `LoadResult`, `map_names`) are `runtime_common/weights.py`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from runtime_common import checkpoint as ckpt
from runtime_common.progress import track
from runtime_common.weights import LoadResult, WeightsMismatch, label  # noqa: F401 (re-exported)


@dataclass
class _Entry:
    shape: tuple[int, ...]
    dtype: torch.dtype
    get: Callable[[], torch.Tensor]
    origin: str                       # the name in the checkpoint


def _ties(model: nn.Module) -> dict[str, str]:
    return dict(getattr(model, "ties", {}) or {})


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write the model's state dict to a safetensors file, each tied tensor once (under its owner's name)."""
    ties = _ties(model)
    out = {}
    for name, t in model.state_dict().items():
        if name in ties:
            continue
        if t.is_meta:
            raise ValueError(f"cannot save {name}: the model is on the meta device (load or initialise it first)")
        out[name] = t.detach().to("cpu").contiguous()
    save_file(dict(sorted(out.items())), os.fspath(path), metadata={"format": "pt"})


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True, cast: bool = False) -> LoadResult:
    """Load a safetensors file written by `save_weights` (or any with the model's names) into `model`."""
    path = os.fspath(path)
    with safe_open(path, framework="pt") as f:
        entries = {}
        for name in f.keys():
            sl = f.get_slice(name)
            entries[name] = _Entry(tuple(sl.get_shape()), _DTYPES[sl.get_dtype()], (lambda n=name: f.get_tensor(n)),
                                   name)
        return _assign(model, entries, strict, cast, path, [])


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_ST = {v: k for k, v in _DTYPES.items()}


def load_state_dict_mapped(model: nn.Module, tensors: Mapping[str, torch.Tensor], mapping: Sequence,
                           strict: bool = True, cast: bool = False) -> LoadResult:
    """Load a checkpoint's tensors under names rewritten by the key map `mapping` (see the module docstring)."""
    refs = {n: ckpt.Ref(n, tuple(t.shape), _ST[t.dtype], value=t) for n, t in tensors.items()}
    return _load_planned(model, refs, mapping, strict, cast, "the mapped checkpoint")


def load_checkpoint(model: nn.Module, path: str | os.PathLike, mapping: Sequence = (), strict: bool = True,
                    cast: bool = True) -> LoadResult:
    """Load a safetensors file, a sharded checkpoint's index, or a folder holding either, through the key map
    `mapping`; every problem is reported at once before any tensor is read."""
    return _load_planned(model, ckpt.sources_of(path), mapping, strict, cast, os.fspath(path))


def _read(ref: ckpt.Ref) -> torch.Tensor:
    if ref.value is not None:
        return ref.value
    a = ckpt.tensor_bytes(ref)
    t = torch.from_numpy(np.array(a))                  # an owned copy; the file's map goes with `a`
    del a
    return t.view(_DTYPES[ref.dtype]) if ref.dtype in ("BF16", "F8_E4M3", "F8_E5M2") else t


_FW = ckpt.Framework(read=_read, cat=lambda xs: torch.cat(xs, 0), stack=lambda xs: torch.stack(xs, 0),
                     narrow=lambda x, d, s, n: x.narrow(d, s, n).clone())


def _load_planned(model: nn.Module, refs: dict, mapping: Sequence, strict: bool, cast: bool,
                  source: str) -> LoadResult:
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    planned, problems = ckpt.plan(refs, mapping, shapes)
    entries = {new: _Entry(tuple(src.shape), _DTYPES[src.dtype], (lambda s=src: ckpt.materialise(s, _FW)),
                           src.origin) for new, src in planned.items()}
    return _assign(model, entries, strict, cast, source, problems)


def _assign(model: nn.Module, entries: dict[str, _Entry], strict: bool, cast: bool, source: str,
            other: list[str]) -> LoadResult:
    state = model.state_dict(keep_vars=True)
    ties = _ties(model)
    groups: dict[str, list[str]] = {}
    for name in state:
        groups.setdefault(ties.get(name, name), []).append(name)
    missing, shapes, dtypes = [], [], []
    plan: list[tuple[list[str], list[str]]] = []      # (model names to fill, file names to read)
    for owner, members in groups.items():
        members = sorted(members, key=lambda n: n != owner)
        present = [n for n in members if n in entries]
        if not present:
            missing.append(f"{owner} {tuple(state[owner].shape)}")
            continue
        want = state[owner]
        for n in present:
            e = entries[n]
            if e.shape != tuple(want.shape):
                shapes.append(f"{label(n, e.origin)}: checkpoint {e.shape}, model {tuple(want.shape)}")
            elif e.dtype != want.dtype and not cast:
                dtypes.append(f"{label(n, e.origin)}: checkpoint {_dt(e.dtype)}, model {_dt(want.dtype)}")
        plan.append((members, present))
    unexpected = sorted(label(n, e.origin) for n, e in entries.items() if n not in state)
    if shapes or dtypes or other or (strict and (missing or unexpected)):
        raise WeightsMismatch(source, missing if strict else [], unexpected if strict else [], shapes, dtypes, other)
    for members, present in plan:
        if len(present) > 1:
            first = entries[present[0]].get()
            other += [f"tied tensors {present[0]} and {n} differ in the checkpoint"
                      for n in present[1:] if not torch.equal(entries[n].get(), first)]
    if other:
        raise WeightsMismatch(source, [], [], [], [], other)
    with torch.no_grad():
        for members, present in track(plan, "loading weights", [state[m[0]].numel() for m, _ in plan]):
            _put(model, members[0], state[members[0]], entries[present[0]].get())
    if hasattr(model, "_tie"):
        model._tie()
    return LoadResult(missing, unexpected)


def _dt(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")


def _put(model: nn.Module, name: str, cur: torch.Tensor, t: torch.Tensor) -> None:
    """Fill `cur` with `t`; a tensor on the meta device is replaced by `t` itself (cast if need be): no second copy."""
    if not cur.is_meta:
        cur.copy_(t)
        return
    t = t.to(cur.dtype)
    if hasattr(model, "put"):
        model.put(name, t)
        return
    path, _, attr = name.rpartition(".")
    mod = model.get_submodule(path)
    if attr in mod._parameters:
        mod._parameters[attr] = nn.Parameter(t, requires_grad=cur.requires_grad)
    else:
        mod._buffers[attr] = t
