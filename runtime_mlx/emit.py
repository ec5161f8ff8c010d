"""Generated code: a compiled model written out as a readable Python module that needs only `runtime_mlx`.

`write(compiled, out_dir, weights=False, seed=0)` writes model.py, report.json (and model.safetensors, in torch
layout: the file the torch runtime writes for the same spec and seed holds the same values): the shared writer
`runtime_common/emit.py`, which says what each file holds, with this runtime's names.
"""
from __future__ import annotations

import os

from runtime_common import emit

TARGET = emit.Target(runtime="runtime_mlx", model="MLX OmnicModel", build_keywords="dtype, seed, init",
                     value="array")


def source(compiled) -> str:
    """The text of the generated model.py."""
    return emit.source(compiled, TARGET)


def write(compiled, out_dir: str | os.PathLike, weights: bool = False, seed: int = 0,
          weights_from: str | os.PathLike | None = None, key_map=(), quant=None) -> list[str]:
    """Write model.py, report.json (and model.safetensors: initialised from `seed`, or `weights_from` a checkpoint
    through `key_map`) into `out_dir`, which must be empty; returns the paths."""
    return emit.write(compiled, out_dir, TARGET, weights, seed, weights_from, key_map, quant)
