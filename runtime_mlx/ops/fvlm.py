"""MLX implementation of `compiler/ops/fvlm.py` (mirror of `runtime_torch/ops/fvlm.py`): FoveatedVLM, the three
modes of the published fVLM code.

The parts are the runtime's own modules, installed at the checkpoint's names: the DINOv2 embeddings are a
PatchEmbed (`encoder.dino.embeddings`), the DINOv2 and Llama layers are TransformerBlocks
(`encoder.dino.encoder.layer.{i}`, `llm.model.layers.{i}`). The deep query reuses each DINO layer's norm1 / query /
output / LayerScale / MLP on one token against that layer's cached K, V.

    __call__(frames, ids, mode=None) -> logits (B, F + T, V)            mode defaults to the spec's `mode`
    generate(frames, ids, max_new_tokens, mode=None) -> ids (B, max_new_tokens), greedy, with the LLM KV cache
Shapes: B batch, F frames, n = 1 + g*g DINO tokens per frame, D DINO width, Q query width, H LLM width, T text.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

from compiler.ir import IMAGE, TOKENS, TensorType
from compiler.ops.fvlm import MODES, dino_block, dino_embed, llm_block

from .. import registry as impls
from ..cache import LayerCache
from ..kernels import attend, dense, norm
from ..node import Node
from ..registry import implements


@implements("FoveatedVLM")
class FoveatedVLM(Node):
    def __init__(self, p, in_types):
        d, m, D, H, g = p.dino, p.llm, p.dino.hidden, p.llm.hidden, p.grid
        image = TensorType.make(["B", 3, g * d.patch_size, g * d.patch_size], IMAGE)
        dino_tokens = TensorType.make(["B", 1 + g * g, D], TOKENS, grid=(g, g), prefix=1)
        text = TensorType.make(["B", "T", H], TOKENS)
        Block = impls.get("TransformerBlock")
        super().__init__(p, in_types, parts={
            "encoder.dino.embeddings": impls.get("PatchEmbed")(dino_embed(p), [image]),
            "encoder.dino.encoder.layer": [Block(dino_block(p), [dino_tokens]) for _ in range(d.layers)],
            "llm.model.layers": [Block(llm_block(p), [text]) for _ in range(m.layers)]})
        self.mode, self.scale, self.tie = p.mode, p.visual_scale, m.tie
        self.heads, self.hs = d.heads, p.dino_head_dim
        dino = self["encoder"]["dino"]
        self.keep(p=p, dino=dino, dino_layers=dino["encoder"]["layer"], llm_layers=self["llm"]["model"]["layers"])

    # --- the encoder ------------------------------------------------------------------------------------------------
    def _attend(self, layer, x, h, k, v):
        """One DINO layer for tokens x (N, s, D) whose normed form is h, attending to k, v (N, n, D)."""
        N, s, D = x.shape
        heads = lambda t: t.reshape(N, t.shape[1], self.heads, self.hs).transpose(0, 2, 1, 3)   # noqa: E731
        y = attend(heads(dense(h, layer.q)), heads(k), heads(v), scale=layer.p.scale)
        (m1, k1), (m2, k2) = layer.ls1, layer.ls2
        x = x + m1[k1] * dense(y.transpose(0, 2, 1, 3).reshape(N, s, D), layer.o)
        return x + m2[k2] * layer.ffn(layer.norm(x, layer.norm2))                    # (N, s, D)

    def encode_frames(self, images):
        """(N, 3, S, S) -> per DINO layer (K, V) of norm1 of its input, each (N, n, D)."""
        x = self.dino["embeddings"](images)                                     # (N, n, D)
        cache = []
        for layer in self.dino_layers:
            h = layer.norm(x, layer.norm1)
            k, v = dense(h, layer.k), dense(h, layer.v)
            cache.append((k, v))
            x = self._attend(layer, x, h, k, v)
        return cache

    def query_attend(self, query, cache):
        """query (N, Q) -> one token per frame (N, D) through every layer's cached K, V (deep query)."""
        enc = self["encoder"]
        x = dense(query, enc["query_input_proj"])[:, None]                     # (N, 1, D)
        for layer, (k, v) in zip(self.dino_layers, cache):
            x = self._attend(layer, x, layer.norm(x, layer.norm1), k, v)
        x = norm(x, self.dino["layernorm"], "layernorm", self.p.dino.norm_eps)
        return dense(x[:, 0], enc["output_proj"])                              # (N, D)

    # --- the language model -----------------------------------------------------------------------------------------
    def embed(self, ids):
        return self["llm"]["model"]["embed_tokens"]["weight"][ids]             # (B, T, H)

    def visual(self, z):
        return dense(z, self["dino_to_llm"]) * self.scale                      # (..., H)

    def hidden(self, x, caches: Optional[list] = None):
        for i, layer in enumerate(self.llm_layers):
            x = layer(x, caches[i] if caches is not None else None)
        return norm(x, self["llm"]["model"]["norm"], "rmsnorm", self.p.llm.norm_eps)   # (B, s, H)

    def logits(self, h):
        llm = self["llm"]
        w = llm["model"]["embed_tokens"]["weight"] if self.tie else llm["lm_head"]["weight"]
        return h @ w.T                                                          # (B, s, V)

    # --- modes ------------------------------------------------------------------------------------------------------
    def _prefill(self, frames, ids, mode: str, caches: Optional[list]):
        """Hidden states (B, F + T, H) of [visual tokens, text]; fills `caches` with the LLM's K, V."""
        if mode not in MODES:
            raise ValueError(f"unknown fVLM mode {mode!r}; modes: {', '.join(MODES)}")
        B, Fr = frames.shape[:2]
        kv = self.encode_frames(frames.reshape(B * Fr, *frames.shape[2:]))     # per layer (B*F, n, D)
        text = self.embed(ids)                                                  # (B, T, H)
        if mode == "autoregressive":
            caches = caches if caches is not None else self.new_caches()
            per_frame = [(k.reshape(B, Fr, *k.shape[1:]), v.reshape(B, Fr, *v.shape[1:])) for k, v in kv]
            q, hs = mx.broadcast_to(self.q_init, (B, self.q_init.shape[1])), []
            for t in range(Fr):
                z = self.query_attend(q, [(k[:, t], v[:, t]) for k, v in per_frame])   # (B, D)
                h = self.hidden(self.visual(z)[:, None], caches)                       # (B, 1, H)
                hs.append(h)
                q = dense(h[:, -1], self["llm_to_query"])                               # (B, Q)
            return mx.concatenate(hs + [self.hidden(text, caches)], axis=1)
        q = mx.broadcast_to(self.q_static, (B * Fr, self.q_static.shape[1]))   # (B*F, Q)
        z = self.query_attend(q, kv).reshape(B, Fr, -1)                         # (B, F, D)
        if mode == "coarse_fine":
            queries = dense(self.hidden(self.visual(z)), self["llm_to_query"])  # (B, F, Q): coarse pass, visual only
            first = mx.broadcast_to(self.q_init[None], (B, 1, self.q_init.shape[1]))
            shifted = mx.concatenate([first, queries[:, :-1]], axis=1)          # frame t <- frame t-1
            z = self.query_attend(shifted.reshape(B * Fr, -1), kv).reshape(B, Fr, -1)
        return self.hidden(mx.concatenate([self.visual(z), text], axis=1), caches)   # (B, F+T, H)

    def new_caches(self) -> list:
        return [LayerCache() for _ in self.llm_layers]

    def __call__(self, frames, ids, mode: Optional[str] = None):
        return self.logits(self._prefill(frames, ids, mode or self.mode, None))   # (B, F+T, V)

    def generate(self, frames, ids, max_new_tokens: int, mode: Optional[str] = None):
        """Greedy decoding after [frames, ids]: (B, max_new_tokens) token ids."""
        caches = self.new_caches()
        h = self._prefill(frames, ids, mode or self.mode, caches)
        out = []
        for _ in range(max_new_tokens):
            nxt = mx.argmax(self.logits(h[:, -1:]), axis=-1)                    # (B, 1)
            mx.eval(nxt)
            out.append(nxt)
            h = self.hidden(self.embed(nxt), caches)
        return mx.concatenate(out, axis=1)
