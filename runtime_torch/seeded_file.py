"""A seeded model's weights written straight into a safetensors file: no model in memory, no second copy.

    write_seeded(model, path, seed)    # the bytes of save_weights(model initialised from seed, path), or False

`model` gives the names, shapes and dtypes (built on the meta device: no storage); each owned declared tensor is
drawn from `seed` by the name-keyed scheme (`runtime_common/init.py`, as `init.materialise` draws it) into its place
in the file, through a writable memory map (`runtime_common/mapped_file.py`), by a pool of threads, largest first
(`runtime_common/pool.py`). A float32 tensor is drawn in place; another dtype is drawn in float32 into a buffer the
thread reuses and cast on the way in, as `materialise` casts it. The file is byte for byte the one `save_weights`
writes for the model built with `seed` (tests/test_materialise.py). Returns False, writing nothing, for a model
whose file cannot be written this way: a state-dict tensor that is not a declared one (its values do not come from
the seed) or tensors of several dtypes; the caller then builds and saves.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch

from runtime_common.init import fill
from runtime_common.mapped_file import MappedFile, layout
from runtime_common.pool import Scratch, parallel

from .weights import _ST


@torch.no_grad()
def write_seeded(model, path: str | os.PathLike, seed: int = 0, n_threads: Optional[int] = None) -> bool:
    """Write `model`'s weights initialised from `seed` to the safetensors file `path` (see the module docstring)."""
    decls = model.weight_decls
    state = {k: v for k, v in model.state_dict().items() if k not in model.ties}
    if any(k not in decls or decls[k].tied_to or v.dtype not in _ST for k, v in state.items()):
        return False
    tensors = {k: (_ST[v.dtype], tuple(v.shape)) for k, v in state.items()}
    if layout(tensors, {"format": "pt"}) is None:
        return False
    scratch = Scratch()
    with MappedFile(path, tensors, {"format": "pt"}) as f:

        def make(name: str) -> None:
            w = state[name]
            if w.numel() == 0:
                return
            with torch.no_grad():
                out = torch.frombuffer(f.buffer, dtype=w.dtype, count=w.numel(), offset=f.offset(name)).view(w.shape)
                fill(out, w.shape, decls[name].init_rule, seed, name, scratch)
            del out

        names = sorted(state)
        for _ in parallel(names, make, [math.prod(tensors[n][1]) for n in names], "writing model.safetensors",
                          n_threads):
            pass
    return True
