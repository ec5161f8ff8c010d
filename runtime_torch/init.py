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

from typing import Optional

import torch

from runtime_common.init import fill
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

    def make(name: str) -> torch.Tensor:
        with torch.no_grad():                      # grad mode is per thread
            cur = model.param(name)
            if cur.is_meta:
                cur = torch.empty(cur.shape, dtype=cur.dtype, device=dev)
            return cur if seed is None else fill(cur, cur.shape, decls[name].init_rule, seed, name, scratch)

    sizes = [model.param(n).numel() for n in names]
    for name, t in parallel(names, make, sizes, "initialising weights" if seed is not None else "allocating weights",
                            n_threads):
        if t is not model.param(name):
            model.put(name, t)
    model._tie()


def initialise(model, seed: int = 0, n_threads: Optional[int] = None) -> None:
    """Fill every owned declared tensor of `model` (an OmnicModel) from `seed` (in place; meta ones get storage)."""
    materialise(model, seed, n_threads=n_threads)
