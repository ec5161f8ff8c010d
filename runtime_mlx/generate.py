"""Autoregressive generation with an MLX OmnicModel of a decoder graph (mirror of `runtime_torch/generate.py`).

    out = generate(model, input_ids, max_new_tokens=20)                          # greedy, (B, T + 20)
    out = generate(model, ids, 20, do_sample=True, temperature=0.8, top_k=50, seed=0)

The prompt runs once (prefill, the whole graph, images included), then one token per step through the text path;
every causal TransformerBlock / GQA_MoE_Layer node on it keeps a `LayerCache` (K, V trimmed to its window, or the
conv state; see runtime_mlx/ops/transformer.py), and every other text node must be position-wise (embedding,
linear, norm, activation) or a join with the fixed image stream, so running it on the new token alone is exact.
Greedy decoding equals the torch runtime's token for token on the same weights (tests/test_mlx_parity.py); sampling
draws from `mx.random` keyed by `seed` (reproducible, not the torch runtime's stream).
`DecodeSession` is the step-by-step form (prefill, then `step(ids)`); `cache_nbytes()` is the decode state held.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

from .ops.transformer import LayerCache, TransformerBlock

POSITIONWISE = {"Embedding", "Linear", "RMSNorm", "LayerNorm", "Activation"}
# joins of the text stream with a fixed one (image tokens): when decoding, the new tokens are text only
TEXT_PASSTHROUGH = {"Concat", "MergeImageTokens"}


class DecodeSession:
    """Runs `model` on (B, T) token ids, keeping per-layer caches between calls.

    The first `step` is the prefill: the whole graph the logits depend on runs, other inputs (images) included,
    and every causal block on the text path fills its cache with the full sequence (image tokens too). Later steps
    run only the text path: nodes that depend on the token ids. There, a sequence Concat or a MergeImageTokens
    passes the new text tokens through (the image part is already in the caches), position-wise nodes run on the
    new tokens, and causal blocks continue their caches. Anything else on the text path is refused.
    """

    def __init__(self, model, logits: Optional[str] = None):
        import networkx as nx
        g = model.graph
        ids_inputs = [n for n in model.input_names if g[n].out.kind == "ids"]
        if len(ids_inputs) != 1:
            raise ValueError(f"generate needs a model with one token-id input; this one has {model.input_names}")
        self.input = ids_inputs[0]
        self.others = [n for n in model.input_names if n != self.input]
        node_of = lambda o: o if o in g else o.rsplit(".", 1)[0]          # noqa: E731 - "node" or "node.output"
        if logits is None:
            text_outs = [o for o in model.output_names if self.input in nx.ancestors(g.g, node_of(o))]
            if len(text_outs) != 1:
                raise ValueError(f"the model has outputs {model.output_names}: name the logits with logits=...")
            logits = text_outs[0]
        self.logits = logits
        head = node_of(logits)
        needed = nx.ancestors(g.g, head) | {head}
        text = nx.descendants(g.g, self.input) | {self.input}
        if head not in text:
            raise ValueError(f"{logits} does not depend on the token ids {self.input}")
        self.prefill, self.decode = [], []     # (node name, module, input keys, cached?)
        for node in g.nodes():
            if node.op == "Input" or node.name not in needed:
                continue
            mod = model.node(node.name)
            keys = [f"{s}.{o}" if o != "out" else s for s, o in node.inputs]
            on_text = node.name in text
            cached = on_text and isinstance(mod, TransformerBlock) and (mod.kind == "conv" or mod.causal)
            self.prefill.append((node.name, mod, keys, cached))
            if not on_text:
                continue
            if list(node.outputs) != ["out"]:
                raise ValueError(f"node {node.name} has several outputs; decoding runs single-output text nodes")
            if node.op in TEXT_PASSTHROUGH:
                tk = [k for (s, _), k in zip(node.inputs, keys) if s in text and g[s].out.kind != "ids"]
                if len(tk) != 1 or (node.op == "Concat" and node.params.axis != "sequence"):
                    raise ValueError(f"node {node.name} ({node.op}) does not join one text stream along the "
                                     f"sequence; it cannot be decoded token by token")
                self.decode.append((node.name, None, tk, False))
            elif cached or node.op in POSITIONWISE:
                self.decode.append((node.name, mod, keys, cached))
            else:
                raise ValueError(f"generate decodes token by token; node {node.name} ({node.op}) on the text path "
                                 f"is neither a causal block, position-wise, nor a join with a fixed stream")
        self.plan = self.decode
        self.reset()

    def reset(self) -> None:
        self.caches = {name: LayerCache() for name, _, _, cached in self.prefill if cached}
        self.started = False

    @property
    def seen(self) -> int:
        return next(iter(self.caches.values())).seen if self.caches else 0

    def cache_arrays(self) -> list[mx.array]:
        return [a for c in self.caches.values() for a in c.arrays()]

    def cache_nbytes(self) -> int:
        """Bytes of decode state held: K, V and conv states of every layer."""
        return sum(a.nbytes for a in self.cache_arrays())

    def step(self, ids: mx.array, **inputs: mx.array) -> mx.array:
        """Logits (B, T, V) of the new token ids (B, T), continuing the cached sequence (lazy: `mx.eval` it). The
        first call (the prefill) also takes the model's other inputs by name (e.g. image=...)."""
        if not self.started:
            missing = [n for n in self.others if n not in inputs]
            if missing:
                raise ValueError(f"the prefill needs the inputs {missing}")
            plan, env = self.prefill, {self.input: ids, **inputs}
            self.started = True
        else:
            plan, env = self.decode, {self.input: ids}
        for name, mod, ins, cached in plan:
            xs = [env[k] for k in ins]
            env[name] = xs[0] if mod is None else mod(*xs, cache=self.caches[name]) if cached else mod(*xs)
        return env[self.logits]


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
        scores = session.step(nxt, **(inputs if i == 0 else {}))[:, -1].astype(mx.float32)   # (B, V)
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
