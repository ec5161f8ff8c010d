"""omnic's MLX runtime: the mirror of `runtime_torch`, plus `layout.py` (the one place where MLX layouts differ).

    model = build(compiled, dtype=None, seed=0, init=True)    # an OmnicModel (an mlx.nn.Module)
    outputs = model(input_ids=ids)                              # {output name: mx.array}, lazy until mx.eval

The model is nested by the graph's dotted node names, so its flattened parameter names are the torch state-dict keys;
a seed gives the same values as `runtime_torch.build(seed=...)`. Parts: `registry.py` (op -> module class), `ops/`
(the implementations), `model.py` (OmnicModel), `layout.py` (the one table of MLX layout differences), `init.py`,
`weights.py` (safetensors in torch layout: one file serves both runtimes), `emit.py` (generated model.py),
`generate.py` (KV cache, decoding), `memory.py` (measured memory).

BLAS on Linux: `blas.py` makes MLX's CPU kernels call a tuned OpenBLAS instead of the wheel's reference BLAS (about
37x faster GEMMs), whether or not `mlx` was imported first; `BLAS` records what happened (`omnic doctor` prints it).
"""
from __future__ import annotations

from .blas import BLAS, preload as _preload_blas, warn_if_slow as _warn_if_slow

_preload_blas()     # before `import mlx.core` below; when mlx came first, rebinds its BLAS calls instead
_warn_if_slow()

# everything below imports mlx: after the BLAS preload
import os  # noqa: E402
from typing import Any, Optional, Union  # noqa: E402

import mlx.core as mx  # noqa: E402

from compiler.graph_data import from_data, to_data  # noqa: E402

from .init import initialise  # noqa: E402
from .model import OmnicModel  # noqa: E402
from .registry import all_impls, get, implements  # noqa: E402
from .weights import WeightsMismatch, load_checkpoint, load_state_dict_mapped, load_weights, save_weights  # noqa: E402

__all__ = ["build", "from_graph_data", "OmnicModel", "implements", "get", "all_impls", "save_weights",
           "load_weights", "load_state_dict_mapped", "load_checkpoint", "WeightsMismatch", "to_data", "BLAS"]


def _dtype(dtype: Union[None, str, mx.Dtype]) -> Optional[mx.Dtype]:
    if dtype is None or isinstance(dtype, mx.Dtype):
        return dtype
    d = getattr(mx, str(dtype), None)
    if not isinstance(d, mx.Dtype):
        raise ValueError(f"unknown dtype {dtype!r} (e.g. float32, bfloat16)")
    return d


def build(compiled, dtype: Union[None, str, mx.Dtype] = None, seed: int = 0, init: bool = True,
          weights: Union[None, str, os.PathLike] = None) -> OmnicModel:
    """An OmnicModel of a `Compiled` (errors raise SpecError) or of its graph, floating tensors cast to `dtype`
    (default float32) and, if `init`, filled from `seed` (the same values as `runtime_torch.build(seed=...)`), or
    read from `weights` (a safetensors file in torch layout, loaded strictly and cast: each tensor read once; the
    arrays the model is made with are lazy zeros that are never computed); frozen nodes are frozen
    (`trainable_parameters()` counts the report's trainable parameters)."""
    model = OmnicModel(compiled)
    dt = _dtype(dtype)
    if dt is not None:
        model.set_dtype(dt)
    if weights is not None:
        load_weights(model, weights, cast=True)
    elif init:
        initialise(model, seed)
    for node in model.graph.nodes():           # the spec's frozen parts are left out of trainable_parameters()
        if node.frozen and node.op != "Input":
            model.node(node.name).freeze()
    return model


def from_graph_data(data: dict[str, Any], **kw) -> OmnicModel:
    """Rebuild a model from `graph_data.to_data` output (what generated model.py files hold); kw as `build`."""
    return build(from_data(data), **kw)
