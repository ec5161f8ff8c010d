"""The base of every torch op module: its parameters are allocated from the op's weight declaration
(`runtime_common/params.py`) before the op's own `__init__` body runs, so op code is forward code.

    @implements("MyOp")
    class MyOp(Node):
        def __init__(self, p, in_types):
            super().__init__(p, in_types)           # every declared tensor exists now, uninitialised
            self.keep(proj=self.at("proj"))         # handles to declared modules (None where not declared)
        def forward(self, x):
            return dense(x, self.proj)              # runtime_torch/kernels.py

Declared dotted names become plain `Box` modules on the path (`self_attn` in `self_attn.q_proj.weight`); a module
holding a `weight` reads `bias` None when no bias is declared, so `dense(x, m)` serves both. A tensor declared
`tied_to` another is registered as None: the model sets it to the owner's Parameter. Handles are kept with `keep`,
outside torch's module registry, so every tensor is in the state dict once, at its declared name.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from compiler import registry
from compiler.registry import W
from runtime_common.params import allocate, find


class Box(nn.Module):
    """A plain module on the path to a parameter (`self_attn` in `self_attn.q_proj.weight`)."""


class TorchParams:
    """The torch callbacks of `runtime_common.params`: the declared layout, `torch.empty` (build() initialises)."""

    @staticmethod
    def child(mod: nn.Module, key: str, make: bool) -> Optional[nn.Module]:
        sub = mod._modules.get(key)
        if sub is None and make:
            sub = mod._modules[key] = Box()
        return sub

    @staticmethod
    def alloc(mod: nn.Module, attr: str, name: str, w: W) -> None:
        if w.buffer:                                   # a persistent buffer: in the state dict, not a parameter
            mod.register_buffer(attr, torch.empty(w.shape))
            return
        mod.register_parameter(attr, None if w.tied_to else nn.Parameter(torch.empty(w.shape)))
        if attr == "weight" and "bias" not in mod._parameters:
            mod.register_parameter("bias", None)       # replaced if a bias is declared too


RUNTIME = TorchParams()


class Node(nn.Module):
    """An op's module, its parameters built from the declaration (module docstring). `op_name` is set by
    `@implements`."""

    op_name: str

    def __init__(self, p, in_types=None, parts: Optional[dict[str, nn.Module]] = None):
        """`parts`: {dotted path: module} installed first (a composite's sub-nodes, which build their own tensors);
        the declaration's tensors under them are theirs, the rest are allocated here."""
        super().__init__()
        for path, mod in (parts or {}).items():
            *up, last = path.split(".")
            parent = self
            for part in up:
                parent = RUNTIME.child(parent, part, True)
            parent._modules[last] = mod
        allocate(self, self.op_name, p, RUNTIME, skip=tuple(path + "." for path in parts or ()))

    def at(self, path: str) -> Optional[nn.Module]:
        """The module at a declared dotted path (a projection, a norm), or None when the declaration has none."""
        return find(self, path, RUNTIME)

    def ref(self, name: str) -> Optional[tuple[nn.Module, str]]:
        """(module, attribute) of the declared tensor `name`, read with `getattr(*ref)` at call time (`.to()` and
        loading replace tensors, not modules); None when not declared."""
        path, _, attr = name.rpartition(".")
        mod = self.at(path) if path else self
        return (mod, attr) if mod is not None and attr in mod._parameters else None

    def t(self, name: str) -> torch.Tensor:
        """The declared tensor at dotted `name`."""
        mod, attr = self.ref(name)
        return getattr(mod, attr)

    def hold(self, p) -> None:
        """Keep the handles the op declares for p (its compiler op's `handles`: attribute -> dotted name): the
        module at that name, else (module, attribute) of the tensor there, read with `getattr(*ref)`; None stays None."""
        for a, name in registry.get(self.op_name).handles(p).items():
            mod = self.at(name) if name is not None else None
            self.keep(**{a: mod if mod is not None or name is None else self.ref(name)})

    def keep(self, **handles) -> None:
        """Plain attributes for handles to modules already in the tree (not a second registration)."""
        for k, v in handles.items():
            if self._modules.get(k, v) is not v or k in self._parameters:
                raise ValueError(f"{type(self).__name__}: handle {k!r} would hide the declared {k!r} (another name)")
            object.__setattr__(self, k, v)

