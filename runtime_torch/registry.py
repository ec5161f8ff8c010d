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
Implementation modules are imported from `runtime_torch/ops/*.py` on first use; one registration per op (the table:
`runtime_common/registry.py`).
"""
from __future__ import annotations

from torch import nn

from runtime_common.registry import Implementations

_REGISTRY = Implementations("torch", nn.Module, "nn.Module", "runtime_torch.ops")
_IMPLS = _REGISTRY.impls
implements = _REGISTRY.implements   # class decorator: @implements("Linear")
get = _REGISTRY.get                 # op name -> implementation class
all_impls = _REGISTRY.all           # {op name: implementation class}, sorted
