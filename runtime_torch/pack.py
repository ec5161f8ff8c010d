"""Weight storage for fast token-by-token inference: same parameter names, shapes and values, different layout.

Decoding one token multiplies every weight matrix by one vector, so its speed is the speed at which the matrix
product reads the weights. On this project's CPU machine (MKL fp32, one thread; `bench/bench_torch.py` prints the
figures of the machine it runs on) a (out, in) weight stored row-major, as nn.Linear stores it, is read at about
10 GB/s when in = 576; the same weight stored column-major (its transpose contiguous) at 14-20 GB/s when
out >= in, and slower than row-major when out < in. `pack(model)` therefore changes storage only:

- projections that read the same input (a block's q | k | v, gate | up) go side by side into one column-major
  buffer (in, out_1 + out_2 + ...); each parameter becomes a view of its columns: shape (out_i, in), strides
  (1, total). The block runs one product for the group (`Packed.__call__`) while the views are intact and no
  gradient is wanted, and the parameters one by one otherwise (training, torch.export, torch.compile);
- every other 2-D weight with out >= in that a matrix product reads (linear layers, a head tied to an embedding)
  is stored column-major; embedding tables read only by lookups stay row-major.

With more than one intra-op thread, MKL still runs a matrix-vector product on one (measured: 18 GB/s at 1 or 2
threads on the head, while a 2-thread read reaches 24). `linear(x, w, b)` therefore splits the product of a few
rows into P = torch.get_num_threads() blocks of output columns, one batched product (torch.bmm runs batches in
parallel) over views of the weight, either layout, no copy: 2 threads reach 26 GB/s on the head, 16-20 on the
block's matrices (`bench/bench_torch.py` prints the model-level figure); that product is `kernels.linear`.

Values are untouched, so `state_dict()`, `save_weights` (which writes contiguous copies) and checkpoints are the
same. `load_weights` copies in place and keeps the layout; `model.to(...)` re-packs a packed model. Products over
column-major storage sum in another order than over row-major storage: outputs differ in the last bits (parity
with transformers is unchanged, see tests/test_pack.py). `unpack(model)` restores contiguous row-major storage.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .kernels import linear


class Packed:
    """Several projections of one input stored as one column-major buffer; calling it runs them as one product."""

    def __init__(self, mods: Sequence[nn.Module]):
        ws = [m.weight for m in mods]
        self.mods = tuple(mods)
        self.sizes = tuple(w.shape[0] for w in ws)
        with torch.no_grad():
            buf = torch.cat([w.detach().t() for w in ws], dim=1)                  # (in, total), contiguous
            bias = None
            if all(m.bias is not None for m in mods):
                bias = torch.cat([m.bias.detach() for m in mods])                 # (total,)
        start = 0
        for m, n in zip(mods, self.sizes):
            m.weight.data = buf[:, start:start + n].t()                          # (out, in) view, strides (1, total)
            if bias is not None:
                m.bias.data = bias[start:start + n]
            start += n
        self.wt, self.bias = buf.t(), bias                                       # (total, in) view for F.linear
        self.held = tuple((m._parameters, m.weight, m.bias) for m in mods)
        self.ptrs = self._ptrs()

    def _ptrs(self) -> tuple:
        return tuple((w.data_ptr(), b.data_ptr() if b is not None else 0) for _, w, b in self.held)

    def usable(self) -> bool:
        """True when the parameters are still the ones placed in the buffer (no `.to`, no re-assignment) and a
        fused product gives what the separate ones would: no gradient wanted, not being traced."""
        if torch.is_grad_enabled() and any(w.requires_grad for _, w, _ in self.held):
            return False
        if torch.compiler.is_compiling():           # torch.compile and torch.export alike
            return False
        same = all(ps.get("weight") is w and ps.get("bias") is b for ps, w, b in self.held)
        return same and self._ptrs() == self.ptrs

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return linear(x, self.wt, self.bias).split(self.sizes, dim=-1)            # (..., in) -> (..., out_i) each


def group(mods: Sequence[Optional[nn.Module]]) -> Optional[Packed]:
    """A Packed of `mods` when they can share a buffer (same input width, dtype and device, all biased or none,
    not on the meta device), else None."""
    if any(m is None or getattr(m, "weight", None) is None for m in mods) or len(mods) < 2:
        return None
    ws = [m.weight for m in mods]
    if (len({(w.shape[1], w.dtype, w.device) for w in ws}) != 1 or ws[0].is_meta or ws[0].dim() != 2
            or any(type(w) is not nn.Parameter for w in ws)                 # quantised weights (quantize.py)
            or len({m.bias is None for m in mods}) != 1):
        return None
    return Packed(mods)


def column_major(p: torch.Tensor) -> None:
    """Store a 2-D parameter column-major (values and shape unchanged)."""
    if type(p) is nn.Parameter and not p.is_meta and p.dim() == 2 and p.stride() != (1, p.shape[0]):
        p.data = p.data.t().contiguous().t()


def pack(model: nn.Module) -> nn.Module:
    """Re-lay out `model`'s weights in place (module docstring); returns the model. Idempotent. The new storage is
    made outside inference mode (so the model still trains after a `generate` under torch.inference_mode)."""
    with torch.inference_mode(False):
        return _pack(model)


def _pack(model: nn.Module) -> nn.Module:
    grouped: set[int] = set()
    for mod in model.modules():
        if hasattr(mod, "pack"):
            grouped |= {id(p) for p in mod.pack()}
    heads = {id(model.param(owner)) for owner in getattr(model, "ties", {}).values()}   # tables a head reads too
    lookups = {id(model.param(n)) for n, w in model.weight_decls.items()
               if w.role == "embedding" and not w.tied_to} - heads               # tables read by lookups only
    for p in model.parameters():
        if id(p) not in grouped and id(p) not in lookups and p.dim() == 2 and p.shape[0] >= p.shape[1]:
            column_major(p)
    model._packed = True
    return model


def unpack(model: nn.Module) -> nn.Module:
    """Contiguous row-major storage for every parameter, and no fused groups."""
    with torch.inference_mode(False):
        return _unpack(model)


def _unpack(model: nn.Module) -> nn.Module:
    for mod in model.modules():
        if hasattr(mod, "pack"):
            mod._groups = {}
    for p in model.parameters():
        if not p.is_contiguous():
            p.data = p.data.contiguous()
    model._packed = False
    return model
