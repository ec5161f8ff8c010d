"""Autoregressive generation with an OmnicModel of a decoder graph: KV cache, sliding windows, conv state.

    out = generate(model, input_ids, max_new_tokens=20)                          # greedy, (B, T + 20)
    out = generate(model, ids, 20, do_sample=True, temperature=0.8, top_k=50, seed=0)

The prompt runs once (prefill), then one token per step; every causal TransformerBlock / GQA_MoE_Layer node keeps
a `LayerCache` (K, V trimmed to its window, or the conv state; see runtime_torch/ops/transformer.py), and every
other node must be position-wise (embedding, linear, norm, activation), so running it on the new token alone is
exact. Greedy decoding equals transformers' `generate(do_sample=False)` token for token on the same weights.
A batch holds prompts of one length (no padding: positions are 0..T-1 in every row).
`DecodeSession` is the step-by-step form (prefill, then `step(ids)`), for callers that drive decoding themselves.
"""
from __future__ import annotations

from typing import Optional

import torch

from .ops.transformer import LayerCache, TransformerBlock

POSITIONWISE = {"Embedding", "Linear", "RMSNorm", "LayerNorm", "Activation"}


class DecodeSession:
    """Runs `model` on (B, T) token ids, keeping per-layer caches between calls."""

    def __init__(self, model, logits: Optional[str] = None):
        g = model.graph
        ids_inputs = [n for n in model.input_names if g[n].out.kind == "ids"]
        if len(model.input_names) != 1 or len(ids_inputs) != 1:
            raise ValueError(f"generate needs a model with one token-id input; this one has {model.input_names}")
        self.input = ids_inputs[0]
        if logits is None:
            if len(model.output_names) != 1:
                raise ValueError(f"the model has outputs {model.output_names}: name the logits with logits=...")
            logits = model.output_names[0]
        self.logits = logits
        self.plan = []                     # (node name, module, input keys, cached?)
        self.caches: dict[str, LayerCache] = {}
        for node in g.nodes():
            if node.op == "Input":
                continue
            mod = model.node(node.name)
            cached = isinstance(mod, TransformerBlock) and (mod.kind == "conv" or mod.causal)
            if not cached and node.op not in POSITIONWISE:
                raise ValueError(f"generate runs decoder graphs; node {node.name} ({node.op}) is neither a causal "
                                 f"block nor position-wise")
            if list(node.outputs) != ["out"]:
                raise ValueError(f"node {node.name} has several outputs; generate runs single-output nodes")
            self.plan.append((node.name, mod, [f"{s}.{o}" if o != "out" else s for s, o in node.inputs], cached))
        self.reset()

    def reset(self) -> None:
        self.caches = {name: LayerCache() for name, _, _, cached in self.plan if cached}

    @property
    def seen(self) -> int:
        return next(iter(self.caches.values())).seen if self.caches else 0

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the new token ids (B, T), continuing the cached sequence."""
        env = {self.input: ids}
        for name, mod, ins, cached in self.plan:
            xs = [env[k] for k in ins]
            env[name] = mod(*xs, cache=self.caches[name]) if cached else mod(*xs)
        return env[self.logits]


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
             top_k: Optional[int] = None, seed: Optional[int] = None, eos_token_id: Optional[int] = None,
             logits: Optional[str] = None) -> torch.Tensor:
    """The prompt (B, T) followed by up to max_new_tokens tokens (B, T + n). Greedy unless do_sample; sampling
    divides the logits by temperature, keeps the top_k largest, and draws from a generator seeded with `seed`.
    With eos_token_id, stops once every row has produced it (finished rows continue with eos_token_id)."""
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be positive when sampling")
    session = DecodeSession(model, logits)
    gen = torch.Generator(device=input_ids.device)
    if seed is not None:
        gen.manual_seed(seed)
    out = [input_ids]
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    nxt = input_ids
    for _ in range(max_new_tokens):
        scores = session.step(nxt)[:, -1].float()                             # (B, V)
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
