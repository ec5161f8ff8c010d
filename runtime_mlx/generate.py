"""Autoregressive generation with an MLX OmnicModel of a decoder graph (mirror of `runtime_torch/generate.py`).

    out = generate(model, input_ids, max_new_tokens=20)                          # greedy, (B, T + 20)
    out = generate(model, ids, 20, do_sample=True, temperature=0.8, top_k=50, seed=0)

The prompt runs once (prefill, the whole graph, images included), then one token per step through the text path;
every node on it whose op declares decode state keeps a `LayerCache` (runtime_mlx/cache.py: K, V trimmed to its
window, the conv state, ...), and every other text node must be position-wise (embedding,
linear, norm, activation) or a join with the fixed image stream, so running it on the new token alone is exact.
Greedy decoding equals the torch runtime's token for token on the same weights (tests/test_mlx_parity.py) and
mlx-lm's `generate_step` on a Llama (tests/test_mlx_generate.py); sampling draws from `mx.random` keyed by `seed`
(reproducible, not the torch runtime's stream).
Speed, as mlx-lm's `generate_step`: the session packs the model's weights first (runtime_mlx/pack.py: fused q|k|v
and gate|up products, parameters unchanged; `pack=False` leaves the model as it is), the KV caches are preallocated
for prompt + max_new_tokens (runtime_mlx/cache.py), and the next step's graph is built and queued with
`mx.async_eval` while the current one computes, so Python's graph building overlaps the products.
`DecodeSession` is the step-by-step form (prefill, then `step(ids)`; its plan is `runtime_common/decode.py`'s);
`cache_nbytes()` is the decode state held.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

from runtime_common.decode import DecodeSession as SharedDecodeSession

from .cache import LayerCache
from .pack import pack as pack_model


class DecodeSession(SharedDecodeSession):
    """`runtime_common.decode.DecodeSession` with MLX's LayerCache, and the size of its caches."""
    cache = LayerCache

    def __init__(self, model, logits: Optional[str] = None, reserve: int = 0, pack: bool = True):
        """`reserve`: tokens (prompt included) the KV caches make room for at once; `pack`: fuse the products that
        read one input first (runtime_mlx/pack.py; names, shapes and values unchanged)."""
        if pack and not getattr(model, "_packed", False):
            pack_model(model)
        super().__init__(model, logits, reserve)

    def cache_arrays(self) -> list[mx.array]:
        return [a for c in self.caches.values() for a in c.arrays()]

    def cache_nbytes(self) -> int:
        """Bytes of decode state held: every declared state of every layer."""
        return sum(a.nbytes for a in self.cache_arrays())

    def step(self, ids: mx.array, last: bool = False, **inputs: mx.array) -> mx.array:
        """Logits (B, T, V) of the new token ids (B, T), continuing the cached sequence (lazy: `mx.eval` it); with
        `last`, of the last token only (B, 1, V). The first call (the prefill) also takes the model's other inputs
        by name (e.g. image=...)."""
        return super().step(ids, last, **inputs)


def generate(model, input_ids, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
             top_k: Optional[int] = None, seed: Optional[int] = None, eos_token_id: Optional[int] = None,
             logits: Optional[str] = None, pack: bool = True, **inputs) -> mx.array:
    """The prompt (B, T) followed by up to max_new_tokens tokens (B, T + n); `inputs` are the model's other inputs
    (images of a VLM), used by the prefill; `pack` as DecodeSession's. Greedy unless do_sample; sampling
    divides the logits by temperature, keeps the top_k largest, and draws with a key made from `seed`.
    With eos_token_id, stops once every row has produced it (finished rows continue with eos_token_id)."""
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be positive when sampling")
    input_ids = mx.array(input_ids)
    inputs = {k: v if isinstance(v, mx.array) else mx.array(v) for k, v in inputs.items()}
    session = DecodeSession(model, logits, reserve=input_ids.shape[1] + max_new_tokens, pack=pack)
    state = {"key": mx.random.key(seed if seed is not None else 0),
             "done": mx.zeros((input_ids.shape[0],), dtype=mx.bool_)}
    out = [input_ids]

    def advance(ids: mx.array) -> mx.array:
        """The next token (B, 1) after `ids` (B, T), built lazily and queued (mx.async_eval)."""
        if session.must_restart(ids.shape[1]):                # longrope past its original context: run it all again
            session.reset()
            ids = mx.concatenate(out, axis=1)
        scores = session.step(ids, last=True, **(inputs if not session.started else {}))[:, -1]
        scores = scores.astype(mx.float32)                                     # (B, V)
        if do_sample:
            scores = scores / temperature
            if top_k is not None and top_k < scores.shape[-1]:
                kth = mx.topk(scores, top_k, axis=-1).min(axis=-1, keepdims=True)
                scores = mx.where(scores < kth, -mx.inf, scores)
            state["key"], sub = mx.random.split(state["key"])
            tok = mx.random.categorical(scores, axis=-1, key=sub)[:, None]     # (B, 1)
        else:
            tok = mx.argmax(scores, axis=-1, keepdims=True)                    # (B, 1)
        tok = tok.astype(input_ids.dtype)
        if eos_token_id is not None:
            tok = mx.where(state["done"][:, None], eos_token_id, tok)
            state["done"] = state["done"] | (tok[:, 0] == eos_token_id)
        mx.async_eval(tok, state["done"], session.cache_arrays())
        return tok

    tok = advance(input_ids) if max_new_tokens > 0 else None
    for i in range(max_new_tokens):
        out.append(tok)
        done = state["done"]
        if i == 0:
            mx.eval(tok)                      # the prompt's token: a caller timing the steps sees the prefill end
        if i + 1 < max_new_tokens:            # queue the next step before waiting on this one
            tok = advance(tok)
        if eos_token_id is not None and bool(done.all()):
            break
    mx.eval(out)
    return mx.concatenate(out, axis=1)
