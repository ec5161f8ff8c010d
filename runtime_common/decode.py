"""Token-by-token decoding of an OmnicModel of a decoder graph, for either runtime: which nodes run in the prefill
and which at each new token, and the caches between calls (`DecodeSession`). `runtime_torch/generate.py` and
`runtime_mlx/generate.py` subclass it with their LayerCache, and write their own `generate` (sampling is framework
code).

What each node does when decoding is its op's declaration (compiler/registry.py), never its type: a node whose op
declares `decode_state` keeps a cache (any kind: K/V, convolution inputs, an SSM state); a stateless node runs on
the new tokens alone if its op's `decode_as(params)` is "positionwise", passes new text tokens through if
"text_join".
"""
from __future__ import annotations

from typing import Optional

from compiler import registry


class DecodeSession:
    """Runs `model` on (B, T) token ids, keeping per-layer caches between calls (a runtime subclasses it, naming its
    `cache` class, made as `cache(reserve=...)`).

    The first `step` is the prefill: the whole graph the logits depend on runs, other inputs (images) included,
    and every stateful node on the text path fills its cache with the full sequence (image tokens too). Later steps
    run only the text path: nodes that depend on the token ids. There, a text join (a sequence Concat, a
    MergeImageTokens) passes the new text tokens through (the image part is already in the caches), position-wise
    nodes run on the new tokens, and stateful nodes continue their caches. Anything else on the text path is
    refused.
    """

    cache: type    # the runtime's LayerCache

    def __init__(self, model, logits: Optional[str] = None, reserve: int = 0):
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
            op = registry.get(node.op)
            cached = on_text and bool(op.decode_state(node.params, g.input_types(node)))
            self.prefill.append((node.name, mod, keys, cached))
            if not on_text:
                continue
            if list(node.outputs) != ["out"]:
                raise ValueError(f"node {node.name} has several outputs; decoding runs single-output text nodes")
            how = op.decode_as(node.params)
            if how == "text_join":
                tk = [k for (s, _), k in zip(node.inputs, keys) if s in text and g[s].out.kind != "ids"]
                if len(tk) != 1:
                    raise ValueError(f"node {node.name} ({node.op}) does not join one text stream along the "
                                     f"sequence; it cannot be decoded token by token")
                self.decode.append((node.name, None, tk, False))
            elif cached or how == "positionwise":
                self.decode.append((node.name, mod, keys, cached))
            else:
                raise ValueError(f"generate decodes token by token; node {node.name} ({node.op}) on the text path "
                                 f"declares no decode state, is not position-wise, nor a join with a fixed stream")
        self.plan = self.decode
        # `step(..., last=True)`: after the last cached block only position-wise nodes run, so they may run on
        # the last token alone (generation needs no other logits)
        cached_at = [i for i, (_, _, _, c) in enumerate(self.prefill) if c]
        tail = self.prefill[cached_at[-1] + 1:] if cached_at else []
        self.last_block = self.prefill[cached_at[-1]][0] if cached_at and all(
            registry.get(g[n].op).decode_as(g[n].params) == "positionwise" for n, _, _, _ in tail) else None
        self.reserve = reserve     # tokens the caches make room for at once (the runtime's cache may ignore it)
        # longrope (Phi-3): once the sequence passes the original context, transformers drops the caches and runs
        # the whole sequence again with the long factors (Phi3ForCausalLM.prepare_inputs_for_generation)
        self.restart_after = min((g[n].params.rope_scaling.original_max_position_embeddings for n, _, _, c in
                                  self.prefill if c and getattr(g[n].params, "rope_scaling", None) is not None
                                  and g[n].params.rope_scaling.rope_type == "longrope"), default=None)
        self.reset()

    def reset(self) -> None:
        self.caches = {name: self.cache(reserve=self.reserve) for name, _, _, cached in self.prefill if cached}
        self.started = False

    def must_restart(self, T: int) -> bool:
        """Whether continuing with T new tokens passes a longrope model's original context while the caches hold
        keys rotated with the short factors: the caller then resets and prefills the whole sequence."""
        r = self.restart_after
        return self.started and r is not None and 0 < self.seen <= r < self.seen + T

    @property
    def seen(self) -> int:
        return next(iter(self.caches.values())).seen if self.caches else 0

    def step(self, ids, last: bool = False, **inputs):
        """Logits (B, T, V) of the new token ids (B, T), continuing the cached sequence; with `last`, those of the
        last token only (B, 1, V), computing no others where the graph allows. The first call (the prefill) also
        takes the model's other inputs by name (e.g. image=...)."""
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
            if last and name == self.last_block:
                env[name] = env[name][:, -1:]
        out = env[self.logits]
        return out[:, -1:] if last else out
