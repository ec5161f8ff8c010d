"""Autoregressive generation with an MLX OmnicModel of a decoder graph (mirror of `runtime_torch/generate.py`).

    out = generate(model, input_ids, max_new_tokens=20)                          # greedy, (B, T + 20)
    out = generate(model, ids, 20, do_sample=True, temperature=0.8, top_k=50, seed=0)

The prompt runs once (prefill, the whole graph, images included), then one token per step through the text path;
every node on it whose op declares decode state keeps a `LayerCache` (runtime_mlx/cache.py: K, V trimmed to its
window, the conv state, ...), and every other text node must be position-wise (embedding,
linear, norm, activation) or a join with the fixed image stream, so running it on the new token alone is exact.
Greedy decoding equals the torch runtime's token for token on the same weights (tests/test_mlx_parity.py); sampling
draws from `mx.random` keyed by `seed` (reproducible, not the torch runtime's stream).
`DecodeSession` is the step-by-step form (prefill, then `step(ids)`; its plan is `runtime_common/decode.py`'s);
`cache_nbytes()` is the decode state held.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

from runtime_common.decode import DecodeSession as SharedDecodeSession

from .cache import LayerCache


class DecodeSession(SharedDecodeSession):
    """`runtime_common.decode.DecodeSession` with MLX's LayerCache, and the size of its caches."""
    cache = LayerCache

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
             logits: Optional[str] = None, **inputs) -> mx.array:
    """The prompt (B, T) followed by up to max_new_tokens tokens (B, T + n); `inputs` are the model's other inputs
    (images of a VLM), used by the prefill. Greedy unless do_sample; sampling
    divides the logits by temperature, keeps the top_k largest, and draws with a key made from `seed`.
    With eos_token_id, stops once every row has produced it (finished rows continue with eos_token_id)."""
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be positive when sampling")
    input_ids = mx.array(input_ids)
    session = DecodeSession(model, logits)
    key = mx.random.key(seed if seed is not None else 0)
    out = [input_ids]
    done = mx.zeros((input_ids.shape[0],), dtype=mx.bool_)
    nxt = input_ids
    inputs = {k: v if isinstance(v, mx.array) else mx.array(v) for k, v in inputs.items()}
    for i in range(max_new_tokens):
        scores = session.step(nxt, last=True, **(inputs if i == 0 else {}))[:, -1].astype(mx.float32)   # (B, V)
        if do_sample:
            scores = scores / temperature
            if top_k is not None and top_k < scores.shape[-1]:
                kth = mx.topk(scores, top_k, axis=-1).min(axis=-1, keepdims=True)
                scores = mx.where(scores < kth, -mx.inf, scores)
            key, sub = mx.random.split(key)
            tok = mx.random.categorical(scores, axis=-1, key=sub)[:, None]     # (B, 1)
        else:
            tok = mx.argmax(scores, axis=-1, keepdims=True)                    # (B, 1)
        tok = tok.astype(input_ids.dtype)
        if eos_token_id is not None:
            tok = mx.where(done[:, None], eos_token_id, tok)
            done = done | (tok[:, 0] == eos_token_id)
        mx.eval(tok, session.cache_arrays())
        out.append(tok)
        nxt = tok
        if eos_token_id is not None and bool(done.all()):
            break
    return mx.concatenate(out, axis=1)
