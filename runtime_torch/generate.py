"""Autoregressive generation with an OmnicModel of a decoder graph: KV cache, sliding windows, conv state.

    out = generate(model, input_ids, max_new_tokens=20)                          # greedy, (B, T + 20)
    out = generate(model, ids, 20, do_sample=True, temperature=0.8, top_k=50, seed=0)

The prompt runs once (prefill), then one token per step; every node whose op declares decode state (a causal
TransformerBlock: K, V trimmed to its window, or the conv state) keeps a `LayerCache` (runtime_torch/cache.py), and
every other node must be position-wise (embedding, linear, norm, activation), so running it on the new token alone
is exact. Greedy decoding equals transformers' `generate(do_sample=False)` token for token on the same weights.
A batch holds prompts of one length (no padding: positions are 0..T-1 in every row).
Speed: the session packs the model's weights for matrix-vector products first (runtime_torch/pack.py: fused
q|k|v and gate|up, column-major storage, products split across threads; names, shapes and values unchanged;
`pack=False` leaves the model as it is), KV caches are preallocated for prompt + max_new_tokens, the prefill
computes the logits of the last prompt token only, and the steps of one token run each plain attention block in the
fewest tensor ops (runtime_torch/decode_step.py; `fast=False` runs the blocks' own forward).
`DecodeSession` is the step-by-step form (prefill, then `step(ids)`), for callers that drive decoding themselves;
its plan is `runtime_common/decode.py`'s.
"""
from __future__ import annotations

from typing import Optional

import torch

from runtime_common.decode import DecodeSession as SharedDecodeSession

from .cache import LayerCache
from .decode_step import one_token
from .pack import pack as pack_model


class DecodeSession(SharedDecodeSession):
    """`runtime_common.decode.DecodeSession` with torch's LayerCache; steps run without grad."""
    cache = LayerCache

    def __init__(self, model, logits: Optional[str] = None, reserve: int = 0, pack: bool = True, fast: bool = True):
        """`reserve`: tokens (prompt included) the KV caches make room for at once; `pack`: store the model's
        weights for fast matrix-vector products first (runtime_torch/pack.py; names, shapes and values unchanged);
        `fast`: steps of one token run the blocks that decode_step.py covers through its `OneToken`."""
        if pack and not getattr(model, "_packed", False):
            pack_model(model)
        super().__init__(model, logits, reserve)
        if fast:
            self.decode = [(name, (one_token(mod) or mod) if cached else mod, keys, cached)
                           for name, mod, keys, cached in self.decode]
            self.plan = self.decode

    @torch.no_grad()
    def step(self, ids: torch.Tensor, last: bool = False, **inputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the new token ids (B, T), continuing the cached sequence; with `last`, of the last
        token only (B, 1, V). The first call (the prefill) also takes the model's other inputs by name."""
        return super().step(ids, last, **inputs)


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
             top_k: Optional[int] = None, seed: Optional[int] = None, eos_token_id: Optional[int] = None,
             logits: Optional[str] = None, pack: bool = True, fast: bool = True,
             **inputs: torch.Tensor) -> torch.Tensor:
    """The prompt (B, T) followed by up to max_new_tokens tokens (B, T + n); `inputs` are the model's other inputs
    (images of a VLM), used by the prefill; `pack`, `fast` as DecodeSession's. Greedy unless do_sample; sampling
    divides the logits by temperature, keeps the top_k largest, and draws from a generator seeded with `seed`.
    With eos_token_id, stops once every row has produced it (finished rows continue with eos_token_id)."""
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be positive when sampling")
    session = DecodeSession(model, logits, reserve=input_ids.shape[1] + max_new_tokens, pack=pack, fast=fast)
    gen = torch.Generator(device=input_ids.device)
    if seed is not None:
        gen.manual_seed(seed)
    out = [input_ids]
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    nxt = input_ids
    for _ in range(max_new_tokens):
        if session.must_restart(nxt.shape[1]):                # longrope past its original context: run it all again
            session.reset()
            nxt = torch.cat(out, dim=1)
        scores = session.step(nxt, last=True, **(inputs if not session.started else {}))[:, -1].float()   # (B, V)
        if do_sample:
            scores = scores / temperature
            if top_k is not None and top_k < scores.shape[-1]:
                kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            tok = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen)   # (B, 1)
        else:
            tok = scores.argmax(dim=-1, keepdim=True)                          # (B, 1)
        if eos_token_id is not None:
            tok = tok.masked_fill(done[:, None], eos_token_id)
            done |= tok[:, 0] == eos_token_id
        out.append(tok)
        nxt = tok
        if eos_token_id is not None and bool(done.all()):
            break
    return torch.cat(out, dim=1)
