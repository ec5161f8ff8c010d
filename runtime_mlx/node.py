"""The base of every MLX op module (mirror of `runtime_torch/node.py`): its parameters are allocated from the op's
weight declaration (`runtime_common/params.py`), in MLX layout (`layout.py`: convolution kernels channels-last),
before the op's own `__init__` body runs, so op code is forward code.

Declared dotted names become plain `Box` modules on the path; a tensor declared `tied_to` another is not created
(the op reads it with `registry.tied`). Handles are kept with `keep`, outside MLX's parameter tree (MLX routes
module, list and dict attributes into it), so every array appears once, at its declared name.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx
from mlx import nn

from compiler import registry
from compiler.registry import W
from runtime_common.params import allocate, find

from . import layout


class Box(nn.Module):
    """A plain module on the path to a parameter (`self_attn` in `self_attn.q_proj.weight`)."""

    def to_quantized(self, group_size: int, bits: int, mode: str = "affine", **kw):
        """For `mlx.nn.quantize` (runtime_mlx/quantize.py, which asks only boxes holding a projection's `weight`
        that the op reads through `kernels.dense`): an `nn.QuantizedLinear` with the same names (weight, scales,
        biases, bias)."""
        return nn.QuantizedLinear.from_linear(self, group_size, bits, mode)


class MLXParams:
    """The MLX callbacks of `runtime_common.params`: zeros in MLX layout (build() initialises)."""

    def __init__(self, op: str):
        self.op = op

    @staticmethod
    def child(mod, key: str, make: bool):
        if isinstance(mod, list):
            return mod[int(key)]
        sub = mod.get(key)
        if sub is None and make:
            sub = mod[key] = Box()
        return sub if isinstance(sub, (nn.Module, list)) else None

    def alloc(self, mod: nn.Module, attr: str, name: str, w: W) -> None:
        if not w.tied_to:
            mod[attr] = mx.zeros(layout.mlx_shape(w.shape, layout.perm_of(self.op, name, w)))


class Node(nn.Module):
    """An op's module, its parameters built from the declaration. `op_name` is set by `@implements`."""

    op_name: str

    def __init__(self, p, in_types=None, parts: Optional[dict] = None):
        """`parts`: {dotted path: module or list} installed first (a composite's sub-nodes, which build their own
        tensors); the declaration's tensors under them are theirs, the rest are allocated here."""
        super().__init__()
        rt = MLXParams(self.op_name)
        for path, mod in (parts or {}).items():
            *up, last = path.split(".")
            parent = self
            for part in up:
                parent = rt.child(parent, part, True)
            parent[last] = mod
        allocate(self, self.op_name, p, rt, skip=tuple(path + "." for path in parts or ()))

    def at(self, path: str) -> Optional[nn.Module]:
        """The module at a declared dotted path, or None when the declaration has none."""
        return find(self, path, MLXParams)

    def ref(self, name: str) -> Optional[tuple[nn.Module, str]]:
        """(module, key) of the declared array `name`, read as `module[key]` at call time (loading replaces
        arrays, not modules); None when not declared."""
        path, _, attr = name.rpartition(".")
        mod = self.at(path) if path else self
        return (mod, attr) if mod is not None and attr in mod else None

    def t(self, name: str) -> mx.array:
        """The declared array at dotted `name`."""
        mod, attr = self.ref(name)
        return mod[attr]

    def hold(self, p) -> None:
        """Keep the handles the op declares for p (its compiler op's `handles`: attribute -> dotted name): the
        module at that name, else (module, attribute) of the tensor there, read with `module[key]`; None stays None."""
        for a, name in registry.get(self.op_name).handles(p).items():
            mod = self.at(name) if name is not None else None
            self.keep(**{a: mod if mod is not None or name is None else self.ref(name)})

    def keep(self, **handles) -> None:
        """Plain attributes for handles to modules already in the tree (not a second tree entry)."""
        for k, v in handles.items():
            if (k in self and self[k] is not v):
                raise ValueError(f"{type(self).__name__}: handle {k!r} would hide the declared {k!r} (another name)")
            object.__setattr__(self, k, v)

