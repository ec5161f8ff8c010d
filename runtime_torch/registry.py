"""The torch implementations of the compiler's ops: `@implements("Linear")` registers an nn.Module class.

The contract (the torch half of `compiler/registry.py`, in the manner of JAX's `register_lowering`):
  * the class is constructed as `Cls(params, in_types)`: the op's params as resolved by the compiler and the list of
    its input `TensorType`s; every dimension is already resolved, an implementation never re-derives one;
  * its parameters are exactly the op's `weights(params)`: the same relative dotted names, the same shapes (torch
    layouts), allocated with `torch.empty` (`build()` initialises them, see `runtime_torch/init.py`); a tensor
    declared `tied_to` another is left unregistered (`register_parameter(name, None)`): the model shares the owner's;
  * buffers, if any, are registered with `persistent=False` (the state dict holds the declared weights only);
  * `forward(*inputs)` takes the input tensors positionally, in slot order, and returns a tensor (ops with the single
    output "out") or a dict {output name: tensor}.
Implementation modules are imported from `runtime_torch/ops/*.py` on first use; one registration per op.
"""
from __future__ import annotations

import importlib
import pkgutil

from torch import nn

_IMPLS: dict[str, type[nn.Module]] = {}
_loaded = False


def implements(op_name: str):
    """Class decorator: register `cls` as the torch implementation of compiler op `op_name` (once)."""
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"@implements({op_name!r}) decorates an nn.Module subclass, not {cls!r}")
        if op_name in _IMPLS:
            raise ValueError(f"op {op_name} has two torch implementations: {_IMPLS[op_name].__qualname__} and "
                             f"{cls.__qualname__}")
        _IMPLS[op_name] = cls
        cls.op_name = op_name
        return cls
    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import ops
        for m in sorted(pkgutil.iter_modules(ops.__path__), key=lambda m: m.name):
            importlib.import_module(f"{ops.__name__}.{m.name}")


def get(name: str) -> type[nn.Module]:
    """The implementation of op `name`; a KeyError that says where to add one if there is none."""
    _load()
    try:
        return _IMPLS[name]
    except KeyError:
        raise KeyError(f"op {name!r} has no torch implementation: add a class decorated "
                       f"@implements({name!r}) in a file under runtime_torch/ops/") from None


def all_impls() -> dict[str, type[nn.Module]]:
    _load()
    return dict(sorted(_IMPLS.items()))
