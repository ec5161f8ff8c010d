"""omnic's MLX runtime: the mirror of `runtime_torch`, plus `layout.py` (the one place where MLX layouts differ).

    model = build(compiled, dtype=None, seed=0, init=True)    # an OmnicModel (an mlx.nn.Module)
    outputs = model(input_ids=ids)                              # {output name: mx.array}, lazy until mx.eval

The model is nested by the graph's dotted node names, so its flattened parameter names are the torch state-dict keys;
a seed gives the same values as `runtime_torch.build(seed=...)`. Parts: `registry.py` (op -> module class), `ops/`
(the implementations), `model.py` (OmnicModel), `layout.py` (the one table of MLX layout differences), `init.py`,
`weights.py` (safetensors in torch layout: one file serves both runtimes), `emit.py` (generated model.py),
`generate.py` (KV cache, decoding), `memory.py` (measured memory).

BLAS on Linux. The `mlx[cpu]` wheel links a bundled reference BLAS (netlib, about 5 GFLOP/s for an fp32 GEMM on this
class of machine). Loading a tuned OpenBLAS with RTLD_GLOBAL *before* `mlx` is imported makes the dynamic linker
bind `cblas_sgemm` and friends to it instead (measured about 185 GFLOP/s; `bench/bench_mlx_gemm.py`). This package
does that on import when such a library is found (Debian: `apt-get install libopenblas0-pthread`); set
`OMNIC_MLX_OPENBLAS=0` to opt out, or `OMNIC_MLX_OPENBLAS=/path/to/libopenblas.so` to name the library.
`BLAS` records what happened. Import `runtime_mlx` before anything that imports `mlx` for it to take effect.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_KNOWN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

#: what the BLAS preload did: {"loaded": bool, "path": str | None, "reason": str}
BLAS: dict = {"loaded": False, "path": None, "reason": "not attempted"}


def _find_openblas() -> str | None:
    for p in _KNOWN_PATHS:
        if os.path.exists(p):
            return p
    name = ctypes.util.find_library("openblas")
    return name


def _preload_openblas() -> None:
    setting = os.environ.get("OMNIC_MLX_OPENBLAS", "1").strip()
    if sys.platform != "linux":
        BLAS.update(reason="not Linux: MLX uses the platform BLAS (Accelerate on macOS)")
        return
    if setting.lower() in ("0", "false", "no", "off"):
        BLAS.update(reason="disabled by OMNIC_MLX_OPENBLAS=0")
        return
    if "mlx.core" in sys.modules:
        BLAS.update(reason="mlx was imported before runtime_mlx: its BLAS is already bound")
        return
    path = setting if setting not in ("1", "true", "yes", "on", "") else _find_openblas()
    if not path:
        BLAS.update(reason="no OpenBLAS found (apt-get install libopenblas0-pthread)")
        return
    try:
        ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
    except OSError as e:
        BLAS.update(reason=f"could not load {path}: {e}")
        return
    BLAS.update(loaded=True, path=path, reason="preloaded with RTLD_GLOBAL before mlx")


_preload_openblas()

# everything below imports mlx: after the BLAS preload
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


def build(compiled, dtype: Union[None, str, mx.Dtype] = None, seed: int = 0, init: bool = True) -> OmnicModel:
    """An OmnicModel of a `Compiled` (errors raise SpecError) or of its graph, floating tensors cast to `dtype`
    (default float32) and, if `init`, filled from `seed` (the same values as `runtime_torch.build(seed=...)`);
    frozen nodes are frozen (`trainable_parameters()` counts the report's trainable parameters)."""
    model = OmnicModel(compiled)
    dt = _dtype(dtype)
    if dt is not None:
        model.set_dtype(dt)
    if init:
        initialise(model, seed)
    for node in model.graph.nodes():           # the spec's frozen parts are left out of trainable_parameters()
        if node.frozen and node.op != "Input":
            model.node(node.name).freeze()
    return model


def from_graph_data(data: dict[str, Any], **kw) -> OmnicModel:
    """Rebuild a model from `graph_data.to_data` output (what generated model.py files hold); kw as `build`."""
    return build(from_data(data), **kw)
