"""Memory as MLX measures it, to check the compiler's memory figures against.

  weight_bytes(model)                  bytes of the owned tensors (tied ones once): compare `memory.weights[fmt]`
  measure_forward_peak(model, inputs)  one forward under `mx.reset_peak_memory()` / `mx.get_peak_memory()`
  measure_prefill(model, ids, **other)  the same for a prefill through `generate.DecodeSession`, which keeps the KV
                                       and conv caches: their bytes compare `memory.decode_state[fmt]` exactly

The allocator's peak counts everything alive at once: the weights, the inputs, every intermediate MLX keeps until
its consumers ran, and the outputs. The compiler's `memory.inference` is weights + decode state + its activation
peak (liveness over the graph plus each op's workspace), so `peak / predicted` near 1 means the accounting holds.
The cache is cleared first (`mx.clear_cache()`), so buffers freed earlier do not hide the forward's own allocations.
"""
from __future__ import annotations

import gc

import mlx.core as mx
from mlx.utils import tree_flatten


def weight_bytes(model) -> int:
    return sum(a.nbytes for _, a in tree_flatten(model.parameters()))


def _start() -> int:
    gc.collect()
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    return mx.get_active_memory()


def measure_forward_peak(model, inputs: dict) -> dict:
    """{"peak", "before", "weights", "outputs"} in bytes for `model(**inputs)` (inputs evaluated first)."""
    inputs = {k: v if isinstance(v, mx.array) else mx.array(v) for k, v in inputs.items()}
    mx.eval(model.parameters(), inputs)
    before = _start()
    out = model(**inputs)
    mx.eval(out)
    peak = mx.get_peak_memory()
    res = {"peak": peak, "before": before, "weights": weight_bytes(model),
           "outputs": sum(v.nbytes for v in out.values())}
    del out
    return res


def measure_prefill(model, ids, logits=None, **inputs) -> dict:
    """{"peak", "before", "weights", "cache", "session"} for a prefill of `ids` (B, T) with caches kept; `inputs`
    are the model's other inputs (images of a VLM)."""
    from .generate import DecodeSession
    ids = ids if isinstance(ids, mx.array) else mx.array(ids)
    inputs = {k: v if isinstance(v, mx.array) else mx.array(v) for k, v in inputs.items()}
    session = DecodeSession(model, logits)
    mx.eval(model.parameters(), ids, inputs)
    before = _start()
    out = session.step(ids, **inputs)
    mx.eval(out, session.cache_arrays())
    peak = mx.get_peak_memory()
    del out
    return {"peak": peak, "before": before, "weights": weight_bytes(model), "cache": session.cache_nbytes(),
            "session": session}
