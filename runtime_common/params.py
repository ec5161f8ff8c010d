"""One builder of every node's parameters, for every runtime: the op's weight declaration is the only place a
tensor's name and shape are written (style.md, 11; flax's `nn.compact` and equinox build parameters from one
description the same way).

    decl = allocate(node_module, "TransformerBlock", params, runtime)

walks `compiler.registry.get(op).weights(params)` ({dotted name: W}) and, for each tensor, finds or makes the
modules on its dotted path (`runtime.child(module, key, make=True)`) and allocates it (`runtime.alloc(module, attr,
name, w)`). A runtime supplies these two callbacks (`runtime_torch/node.py`, `runtime_mlx/node.py`: torch's
layout is the declared one, MLX's comes from `runtime_mlx/layout.py`); a tensor declared `tied_to` another is left
for the model to share. An op's runtime code is then forward code over parameters that already exist: it finds
them with `find(module, dotted path, runtime)`.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol

from compiler import registry
from compiler.registry import W


class Runtime(Protocol):
    def child(self, mod: Any, key: str, make: bool) -> Optional[Any]:
        """The submodule `key` of `mod`; made (a plain path holder) when absent and `make`, else None."""

    def alloc(self, mod: Any, attr: str, name: str, w: W) -> None:
        """Allocate tensor `attr` of `mod` (full dotted name `name` in the node) as declared by `w`."""


def allocate(root: Any, op: str, params: Any, rt: Runtime, skip: tuple[str, ...] = ()) -> dict[str, W]:
    """Allocate every tensor `op` declares for `params` under `root`, except those under the prefixes `skip` (parts
    a composite builds as sub-nodes); returns the declaration."""
    decl = registry.get(op).weights(params)
    for name, w in decl.items():
        if skip and name.startswith(skip):
            continue
        *path, attr = name.split(".")
        mod = root
        for part in path:
            mod = rt.child(mod, part, True)
        rt.alloc(mod, attr, name, w)
    return decl


def find(root: Any, path: str, rt: Runtime) -> Optional[Any]:
    """The module at dotted `path` under `root`, or None when the declaration made none there."""
    mod = root
    for part in path.split("."):
        mod = rt.child(mod, part, False)
        if mod is None:
            return None
    return mod
