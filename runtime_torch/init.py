"""Deterministic initialisation of an OmnicModel's parameters from a seed, by the name-keyed scheme of
`runtime_common/init.py` (whose `draw` gives each declared tensor's values from the seed and its full name alone).
"""
from __future__ import annotations

import torch

from runtime_common.init import draw
from runtime_common.progress import sizes_of, track


@torch.no_grad()
def initialise(model, seed: int = 0) -> None:
    """Fill every owned declared parameter of `model` (an OmnicModel) from `seed`."""
    names = sorted(model.weight_decls)
    for name in track(names, "initialising weights", sizes_of(model.weight_decls[n].shape for n in names)):
        w = model.weight_decls[name]
        if w.tied_to:
            continue
        p = model.param(name)
        p.copy_(draw(w.init_rule, tuple(w.shape), seed, name))
