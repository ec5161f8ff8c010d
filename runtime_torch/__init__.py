"""The PyTorch runtime of omnic: a compiled graph as an nn.Module, its weights, and generated code.

    model = build(compiled, device=None, dtype=None, seed=0, init=True)   # an OmnicModel
    outputs = model(input_ids=ids)                                         # {output name: tensor}

`build` constructs every node's module on the meta device (no memory), casts floating tensors to `dtype`, then gives
each declared tensor its storage once on `device` (`init.py`: with device="meta" nothing is allocated and nothing
initialised): filled from `seed` by the name-keyed scheme of `runtime_common/init.py` (the same values whatever
the construction order, device, dtype or number of threads), left empty (`init=False`), or read from `weights`. Parts: `registry.py` (op -> module class), `ops/` (the implementations), `model.py` (OmnicModel),
`weights.py` (safetensors), `pack.py` (weight layout for fast decoding), `compiler/graph_data.py` (the graph as
plain data), `emit.py` (generated model.py).
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import torch

from compiler.graph_data import from_data, to_data

from .init import initialise, materialise
from .model import OmnicModel
from .pack import pack, unpack
from .registry import all_impls, get, implements
from .seeded_file import write_seeded
from .weights import WeightsMismatch, load_checkpoint, load_state_dict_mapped, load_weights, save_weights

__all__ = ["build", "from_graph_data", "OmnicModel", "implements", "get", "all_impls", "save_weights",
           "load_weights", "load_state_dict_mapped", "load_checkpoint", "WeightsMismatch", "to_data", "pack", "unpack",
           "write_seeded"]


def _dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    d = getattr(torch, str(dtype), None)
    if not isinstance(d, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} (e.g. float32, bfloat16)")
    return d


def build(compiled, device: Union[None, str, torch.device] = None, dtype: Union[None, str, torch.dtype] = None,
          seed: int = 0, init: bool = True, weights: Union[None, str, os.PathLike] = None) -> OmnicModel:
    """An OmnicModel of a `Compiled` (errors raise SpecError) or of its graph; see the module docstring.
    `weights`: a safetensors file with the model's names (`save_weights` writes one), loaded strictly and cast to
    `dtype` instead of drawing from `seed`: each tensor read once from the file into its final storage."""
    dev = torch.device(device) if device is not None else torch.get_default_device()
    with torch.device("meta"):                 # shapes only: every tensor gets its storage once, below
        model = OmnicModel(compiled)
    dt = _dtype(dtype)
    if dt is not None:
        model.to(dtype=dt)
    if weights is not None:
        load_weights(model, weights, cast=True)
        if dev != torch.device("cpu"):
            model.to(dev)
    elif dev.type != "meta":
        materialise(model, seed if init else None, dev)
    for node in model.graph.nodes():           # the spec's frozen parts get no gradients
        if node.frozen and node.op != "Input":
            for p in model.node(node.name).parameters():
                p.requires_grad_(False)
    return model


def from_graph_data(data: dict[str, Any], **kw) -> OmnicModel:
    """Rebuild a model from `graph_data.to_data` output (what generated model.py files hold); kw as `build`."""
    return build(from_data(data), **kw)
