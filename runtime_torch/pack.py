"""Weight storage for fast token-by-token inference: same parameter names, shapes and values, different layout.

Decoding one token multiplies every weight matrix by one vector, so its speed is the speed at which the matrix
product reads the weights. On this project's CPU machine (2 threads; `bench/bench_torch.py` prints the figures of
the machine it runs on) torch.mv reads an fp32 (out, in) weight stored column-major (its transpose contiguous) at
27-39 GB/s and the same weight row-major at 19-36 (the (49152, 576) head: 30 against 15-19), while a bf16 weight
reads at 16-30 GB/s row-major and 7-9 column-major. `pack(model)` therefore changes storage only, by the rule
`kernels.COLUMN_MAJOR_DTYPES`:

- projections that read the same input (a block's q | k | v, gate | up) go side by side into one buffer (fp32:
  column-major (in, out_1 + out_2 + ...), each parameter a view of its columns, shape (out_i, in), strides
  (1, total); bf16 and other dtypes: row-major (total, in), each parameter a view of its rows). The block runs one
  product for the group (`Packed.__call__`) while the views are intact and no gradient is wanted, and the
  parameters one by one otherwise (training, torch.export, torch.compile);
- every other 2-D fp32 weight with out >= in that a matrix product reads (linear layers, a head tied to an
  embedding) is stored column-major, weights of other dtypes row-major; embedding tables read only by lookups stay
  row-major.

A product of one row runs torch.mv, which threads it; a product of 2 to 8 rows (batched decoding) of an fp32
weight is split into P = torch.get_num_threads() blocks of output columns, one batched product (torch.bmm runs
batches in parallel) over views of the weight, either layout, no copy; that product is `kernels.linear`.

Values are untouched, so `state_dict()`, `save_weights` (which writes contiguous copies) and checkpoints are the
same. `load_weights` copies in place and keeps the layout; `model.to(...)` re-packs a packed model. Products over
column-major storage sum in another order than over row-major storage: outputs differ in the last bits (parity
with transformers is unchanged, see tests/test_pack.py). `unpack(model)` restores contiguous row-major storage.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .kernels import COLUMN_MAJOR_DTYPES, linear


class Packed:
    """Several projections of one input stored as one buffer (column-major for COLUMN_MAJOR_DTYPES, else row-major);
    calling it runs them as one product."""

    def __init__(self, mods: Sequence[nn.Module]):
        ws = [m.weight for m in mods]
        self.mods = tuple(mods)
        self.sizes = tuple(w.shape[0] for w in ws)
        cols = ws[0].dtype in COLUMN_MAJOR_DTYPES
        with torch.no_grad():
            if cols:
                wt = torch.cat([w.detach().t() for w in ws], dim=1).t()          # (total, in), strides (1, total)
            else:
                wt = torch.cat([w.detach() for w in ws], dim=0)                  # (total, in), contiguous
            bias = None
            if all(m.bias is not None for m in mods):
                bias = torch.cat([m.bias.detach() for m in mods])                 # (total,)
        start = 0
        for m, n in zip(mods, self.sizes):
            m.weight.data = wt[start:start + n]                                  # (out, in) view of the buffer
            if bias is not None:
                m.bias.data = bias[start:start + n]
            start += n
        self.wt, self.bias = wt, bias                                            # (total, in) for F.linear
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
    """Store a 2-D parameter column-major if its dtype reads faster so (COLUMN_MAJOR_DTYPES), else row-major (values
    and shape unchanged)."""
    if type(p) is not nn.Parameter or p.is_meta or p.dim() != 2:
        return
    if p.dtype not in COLUMN_MAJOR_DTYPES:
        if not p.is_contiguous():
            p.data = p.data.contiguous()
    elif p.stride() != (1, p.shape[0]):
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
