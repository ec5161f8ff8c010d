"""The compiled graph as plain data and back, for generated MLX modules: the torch runtime's `graph_data.py`, which
imports only `compiler` (no torch), loaded here without importing the `runtime_torch` package (whose `__init__`
imports torch), so that a generated MLX module needs neither torch nor its runtime.
"""
from __future__ import annotations

import importlib.util
import os

try:                                    # if the module moves into the compiler, take it from there
    from compiler.graph_data import VERSION, from_data, to_data  # type: ignore[import-not-found]
except ImportError:
    _spec = importlib.util.find_spec("runtime_torch")
    if _spec is None or not _spec.submodule_search_locations:
        raise ImportError("omnic's graph_data module (runtime_torch/graph_data.py) is not installed") from None
    _path = os.path.join(list(_spec.submodule_search_locations)[0], "graph_data.py")
    _mspec = importlib.util.spec_from_file_location("runtime_mlx._graph_data", _path)
    _mod = importlib.util.module_from_spec(_mspec)
    _mspec.loader.exec_module(_mod)
    VERSION, from_data, to_data = _mod.VERSION, _mod.from_data, _mod.to_data

__all__ = ["VERSION", "from_data", "to_data"]
