"""The MLX implementations of the compiler's ops: `@implements("Linear")` registers an `mlx.nn.Module` class.

The contract (the MLX half of `compiler/registry.py`; the mirror of `runtime_torch/registry.py`):
  * the class is constructed as `Cls(params, in_types)`: the op's params as resolved by the compiler and the list of
    its input `TensorType`s; every dimension is already resolved, an implementation never re-derives one;
  * its parameters (the `mx.array`s reachable through its dict) are exactly the op's `weights(params)`: the same
    relative dotted names, with the declared shapes in MLX layout (`runtime_mlx/layout.py`: convolution kernels are
    channels-last, everything else as declared); a tensor declared `tied_to` another is not created: the
    implementation reads it with `tied(self, "weight")`, which the model points at the owner's array;
  * constants that are not declared weights (RoPE frequencies, masks) are kept out of the parameter tree: plain
    Python attributes (MLX's `Module.__setattr__` routes `mx.array`, list, tuple and dict values into the tree, so
    set those with `object.__setattr__` or compute them in `__call__`);
  * `__call__(*inputs)` takes the input arrays positionally, in slot order, in the graph's logical layouts (images
    (B, C, H, W) as in torch) and returns an array (ops with the single output "out") or a dict {output: array}.
Implementation modules are imported from `runtime_mlx/ops/*.py` on first use; one registration per op (the table:
`runtime_common/registry.py`).
"""
from __future__ import annotations

import mlx.core as mx
from mlx import nn

from runtime_common.registry import Implementations

_REGISTRY = Implementations("MLX", nn.Module, "mlx.nn.Module", "runtime_mlx.ops")
_IMPLS = _REGISTRY.impls
implements = _REGISTRY.implements   # class decorator: @implements("Linear")
get = _REGISTRY.get                 # op name -> implementation class
all_impls = _REGISTRY.all           # {op name: implementation class}, sorted


# --- tied tensors --------------------------------------------------------------------------------------------------
def tie(mod: nn.Module, attr: str, owner: nn.Module, owner_attr: str) -> None:
    """Make `tied(mod, attr)` return `owner[owner_attr]` (read at call time, so updates of the owner are seen)."""
    ties = mod.__dict__.setdefault("_omnic_ties", {})
    ties[attr] = (owner, owner_attr)


def tied_owner(mod: nn.Module, attr: str) -> tuple[nn.Module, str]:
    """(owner module, key) of a tensor the module declares but does not own."""
    try:
        return mod.__dict__["_omnic_ties"][attr]
    except KeyError:
        raise AttributeError(f"{type(mod).__qualname__}.{attr} is declared tied but was never tied "
                             f"(build the module through OmnicModel)") from None


def tied(mod: nn.Module, attr: str) -> mx.array:
    """A tensor the module declares but does not own: its owner's current array."""
    owner, key = tied_owner(mod, attr)
    return owner[key]
