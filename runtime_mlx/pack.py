"""Weight storage for token-by-token generation with MLX (the idea of `runtime_torch/pack.py`): same parameter names,
shapes and values, projections that read the same input run as one product.

Decoding one token runs every projection as a matrix-vector product, and on the CPU each MLX op costs a fixed
dispatch time besides its reads (a Llama block of SmolLM2-135M runs about 40 ops per token). `pack(model)` puts a
block's q | k | v and its gate | up side by side in one (out_1 + out_2 + ..., in) buffer and makes each parameter a
view of its rows (MLX slices share their buffer: no second copy of the weights). The block then runs one product
per group (`Packed.__call__`, split into the separate outputs) while its projections and their views are the ones
packed; after a `load_weights`, `update`, `set_dtype` or quantisation replaced them, the block runs them one by one
again (`Packed.usable`), as before packing, until it is packed again.

Unlike torch's CPU kernels, MLX's (OpenBLAS sgemm) read a row-major (out, in) weight and its transpose at the same
rate (`bench/bench_mlx.py`), so storage stays row-major; splitting a product across streams (what the torch pack
does across threads) measured slower in MLX, the streams' synchronisation costing more than it saved. Values are
untouched: `parameters()`, `save_weights` and checkpoints are the same; a fused product sums each output exactly
as the separate ones do, so outputs agree to the last bits or within fp tolerance (tests/test_mlx_generate.py).
"""
from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx
from mlx import nn


class Packed:
    """Several projections of one input stored as one row-major buffer; calling it runs them as one product."""

    def __init__(self, mods: Sequence[nn.Module]):
        ws = [m["weight"] for m in mods]
        self.sizes = tuple(w.shape[0] for w in ws)
        self.w = mx.concatenate(ws, axis=0)                                      # (total, in)
        self.bias = mx.concatenate([m["bias"] for m in mods]) if "bias" in mods[0] else None   # (total,)
        mx.eval(self.w, self.bias)
        start = 0
        for m, n in zip(mods, self.sizes):
            m["weight"] = self.w[start:start + n]                                # (out_i, in) view
            if self.bias is not None:
                m["bias"] = self.bias[start:start + n]
            start += n
        mx.eval([(m["weight"], m.get("bias")) for m in mods])
        self.held = tuple((m, m["weight"], m.get("bias")) for m in mods)
        self.splits = [sum(self.sizes[:i + 1]) for i in range(len(self.sizes) - 1)]

    def usable(self, mods: Sequence[Optional[nn.Module]]) -> bool:
        """True while `mods` (the block's current projections) are the modules packed and their parameters still the
        views placed in the buffer (no load, update, dtype cast or quantisation replaced either)."""
        return len(mods) == len(self.held) and all(
            m is hm and m.get("weight") is w and m.get("bias") is b for m, (hm, w, b) in zip(mods, self.held))

    def __call__(self, x: mx.array) -> list[mx.array]:
        """x (..., in) -> [(..., out_i) for each projection], from one product."""
        y = x @ self.w.T                                                         # (..., total)
        if self.bias is not None:
            y = y + self.bias
        return mx.split(y, self.splits, axis=-1)


def group(mods: Sequence[Optional[nn.Module]]) -> Optional[Packed]:
    """A Packed of `mods` when they can share a buffer (2-D float weights of the same input width and dtype, all
    biased or none, none quantised), else None."""
    if len(mods) < 2 or any(m is None or "weight" not in m or "scales" in m for m in mods):
        return None
    ws = [m["weight"] for m in mods]
    if (any(w.ndim != 2 for w in ws) or len({(w.shape[1], w.dtype) for w in ws}) != 1
            or len({"bias" in m for m in mods}) != 1):
        return None
    return Packed(mods)


def pack(model: nn.Module) -> nn.Module:
    """Give every node that can fuse products (a `pack()` method: TransformerBlock's q|k|v and gate|up) its packed
    groups; returns the model. Idempotent while the groups are usable."""
    return _each_packable(model, "pack", True)


def unpack(model: nn.Module) -> nn.Module:
    """No fused groups: every node runs its projections one by one (the parameters keep their values)."""
    return _each_packable(model, "unpack", False)


def _each_packable(model: nn.Module, method: str, packed: bool) -> nn.Module:
    """Call `method` on every node that can fuse products (has `pack()`); record the state on the model."""
    for name in getattr(model, "_nodes", {}):
        mod = model.node(name)
        if hasattr(mod, "pack"):
            getattr(mod, method)()
    object.__setattr__(model, "_packed", packed)
    return model
