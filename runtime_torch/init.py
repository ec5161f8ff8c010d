"""A model's tensors given storage once and filled from a seed, by the name-keyed scheme of `runtime_common/init.py`
(whose `draw` gives each declared tensor's values from the seed and its full name alone).

`build()` constructs the model on the meta device (no memory, nothing initialised), then `materialise` gives each
owned declared tensor its storage once, on the target device in the target dtype: drawn from the seed straight into
it (a float32 CPU tensor is filled by its generator in place: one buffer, one pass; another dtype or device is drawn
into a float32 buffer the thread reuses, then cast into its storage), or left empty for a checkpoint to fill. The
tensors are independent (each has its own generator), so a pool of threads fills them, largest first
(`runtime_common/pool.py`; torch's kernels release the GIL): the values are those of a sequential fill, whatever
the order or the number of threads. A tensor already allocated (not meta) is filled in place.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from runtime_common.init import draw_into
from runtime_common.pool import Scratch, parallel


@torch.no_grad()
def materialise(model, seed: Optional[int] = 0, device=None, n_threads: Optional[int] = None) -> None:
    """Give every owned declared tensor of `model` (an OmnicModel) its values from `seed` (None: storage only,
    uninitialised), with `n_threads` threads (default one per core). A tensor on the meta device gets new storage on
    `device` (default: torch's) in its dtype."""
    decls = model.weight_decls
    names = [n for n in sorted(decls) if not decls[n].tied_to]
    dev = torch.device(device) if device is not None else torch.get_default_device()
    scratch = Scratch()

    def values(name: str, shape: torch.Size) -> torch.Tensor:     # float32 on the CPU, in this thread's buffer
        buf = scratch.get(math.prod(shape), lambda n: torch.empty(n, dtype=torch.float32))
        return draw_into(buf.view(shape), decls[name].init_rule, seed, name)

    def make(name: str) -> torch.Tensor:
        with torch.no_grad():                      # grad mode is per thread
            cur = model.param(name)
            if cur.is_meta:
                if seed is None:
                    return torch.empty(cur.shape, dtype=cur.dtype, device=dev)
                if cur.dtype == torch.float32 and dev.type == "cpu":
                    return draw_into(torch.empty(cur.shape), decls[name].init_rule, seed, name)
                return values(name, cur.shape).to(device=dev, dtype=cur.dtype, copy=True)
            if seed is None:
                return cur
            if cur.dtype == torch.float32 and cur.device.type == "cpu" and cur.is_contiguous():
                return draw_into(cur, decls[name].init_rule, seed, name)
            return cur.copy_(values(name, cur.shape))

    sizes = [model.param(n).numel() for n in names]
    for name, t in parallel(names, make, sizes, "initialising weights" if seed is not None else "allocating weights",
                            n_threads):
        if t is not model.param(name):
            model.put(name, t)
    model._tie()


def initialise(model, seed: int = 0, n_threads: Optional[int] = None) -> None:
    """Fill every owned declared tensor of `model` (an OmnicModel) from `seed` (in place; meta ones get storage)."""
    materialise(model, seed, n_threads=n_threads)
