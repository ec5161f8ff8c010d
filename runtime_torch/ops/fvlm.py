"""Torch implementation of `compiler/ops/fvlm.py`: FoveatedVLM, the three modes of the published fVLM code.

The parts are the runtime's own modules, installed at the checkpoint's names: the DINOv2 embeddings are a
PatchEmbed (`encoder.dino.embeddings`), the DINOv2 and Llama layers are TransformerBlocks
(`encoder.dino.encoder.layer.{i}`, `llm.model.layers.{i}`), so the numerics are those of the rest of the runtime
(checked against transformers' Dinov2Model and LlamaForCausalLM in tests/test_seed_specs.py). The deep query reuses
each DINO layer's norm1 / query / output / LayerScale / MLP on one token against that layer's cached K, V.

    forward(frames, ids, mode=None) -> logits (B, F + T, V)             mode defaults to the spec's `mode`
Inside an OmnicModel the node runs its `mode` attribute (the spec's): set `model.node("fvlm").mode`, or call the
node itself with `mode=` to choose per call.
    generate(frames, ids, max_new_tokens, mode=None) -> ids (B, max_new_tokens), greedy, with the LLM KV cache
Shapes: B batch, F frames, n = 1 + g*g DINO tokens per frame, D DINO width, Q query width, H LLM width, T text.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from compiler.ir import IMAGE, TOKENS, TensorType
from compiler.ops.fvlm import MODES, dino_block, dino_embed, llm_block

from .. import registry as impls
from ..cache import LayerCache
from ..kernels import dense, norm
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
            "encoder.dino.encoder.layer": nn.ModuleList(Block(dino_block(p), [dino_tokens]) for _ in range(d.layers)),
            "llm.model.layers": nn.ModuleList(Block(llm_block(p), [text]) for _ in range(m.layers))})
        self.p, self.mode, self.scale, self.tie = p, p.mode, p.visual_scale, m.tie
        self.heads, self.hs = d.heads, p.dino_head_dim

    # --- the encoder ------------------------------------------------------------------------------------------------
    def _attend(self, layer, x, h, k, v):
        """One DINO layer for tokens x (N, s, D) whose normed form is h, attending to k, v (N, n, D)."""
        N, s, D = x.shape
        heads = lambda t: t.view(N, t.shape[1], self.heads, self.hs).transpose(1, 2)   # noqa: E731 (N, nh, *, hs)
        y = F.scaled_dot_product_attention(heads(dense(h, layer.q)), heads(k), heads(v))   # (N, nh, s, hs)
        x = x + getattr(*layer.ls1) * dense(y.transpose(1, 2).reshape(N, s, D), layer.o)
        return x + getattr(*layer.ls2) * layer.ffn(layer.norm(x, layer.norm2))       # (N, s, D)

    def encode_frames(self, images):
        """(N, 3, S, S) -> per DINO layer (K, V) of norm1 of its input, each (N, n, D)."""
        dino = self.encoder.dino
        x = dino.embeddings(images)                                             # (N, n, D)
        cache = []
        for layer in dino.encoder.layer:
            h = layer.norm(x, layer.norm1)
            k, v = dense(h, layer.k), dense(h, layer.v)
            cache.append((k, v))
            x = self._attend(layer, x, h, k, v)
        return cache

    def query_attend(self, query, cache):
        """query (N, Q) -> one token per frame (N, D) through every layer's cached K, V (deep query)."""
        dino = self.encoder.dino
        x = dense(query, self.encoder.query_input_proj)[:, None]               # (N, 1, D)
        for layer, (k, v) in zip(dino.encoder.layer, cache):
            x = self._attend(layer, x, layer.norm(x, layer.norm1), k, v)
        x = norm(x, dino.layernorm, "layernorm", self.p.dino.norm_eps)
        return dense(x[:, 0], self.encoder.output_proj)                        # (N, D)

    # --- the language model -----------------------------------------------------------------------------------------
    def embed(self, ids):
        return F.embedding(ids, self.llm.model.embed_tokens.weight)             # (B, T, H)

    def visual(self, z):
        return dense(z, self.dino_to_llm) * self.scale                         # (..., H)

    def hidden(self, x, caches: Optional[list] = None):
        for i, layer in enumerate(self.llm.model.layers):
            x = layer(x, caches[i] if caches is not None else None)
        return norm(x, self.llm.model.norm, "rmsnorm", self.p.llm.norm_eps)    # (B, s, H)

    def logits(self, h):
        w = self.llm.model.embed_tokens.weight if self.tie else self.llm.lm_head.weight
        return F.linear(h, w)                                                   # (B, s, V)

    # --- modes ------------------------------------------------------------------------------------------------------
    def _prefill(self, frames, ids, mode: str, caches: Optional[list]):
        """Hidden states (B, F + T, H) of [visual tokens, text]; fills `caches` with the LLM's K, V."""
        if mode not in MODES:
            raise ValueError(f"unknown fVLM mode {mode!r}; modes: {', '.join(MODES)}")
        B, Fr = frames.shape[:2]
        kv = self.encode_frames(frames.flatten(0, 1))                           # per layer (B*F, n, D)
        text = self.embed(ids)                                                  # (B, T, H)
        if mode == "autoregressive":
            caches = caches if caches is not None else self.new_caches()
            per_frame = [(k.unflatten(0, (B, Fr)), v.unflatten(0, (B, Fr))) for k, v in kv]
            q, hs = self.q_init.expand(B, -1), []
            for t in range(Fr):
                z = self.query_attend(q, [(k[:, t], v[:, t]) for k, v in per_frame])   # (B, D)
                h = self.hidden(self.visual(z)[:, None], caches)                       # (B, 1, H)
                hs.append(h)
                q = dense(h[:, -1], self.llm_to_query)                                  # (B, Q)
            return torch.cat(hs + [self.hidden(text, caches)], dim=1)
        q = self.q_static.expand(B * Fr, -1)                                    # (B*F, Q)
        z = self.query_attend(q, kv).unflatten(0, (B, Fr))                      # (B, F, D)
        if mode == "coarse_fine":
            queries = dense(self.hidden(self.visual(z)), self.llm_to_query)     # (B, F, Q): coarse pass, visual only
            # frame t takes frame t-1's query (q_init for frame 0); slicing F of F + 1 keeps no F-1 sized dim
            shifted = torch.cat([self.q_init.expand(B, 1, -1), queries], dim=1)[:, :Fr]      # (B, F, Q)
            z = self.query_attend(shifted.flatten(0, 1), kv).unflatten(0, (B, Fr))
        return self.hidden(torch.cat([self.visual(z), text], dim=1), caches)   # (B, F+T, H)

    def new_caches(self) -> list:
        return [LayerCache() for _ in self.llm.model.layers]

    def forward(self, frames, ids, mode: Optional[str] = None):
        return self.logits(self._prefill(frames, ids, mode or self.mode, None))   # (B, F+T, V)

    @torch.no_grad()
    def generate(self, frames, ids, max_new_tokens: int, mode: Optional[str] = None):
        """Greedy decoding after [frames, ids]: (B, max_new_tokens) token ids."""
        caches = self.new_caches()
        h = self._prefill(frames, ids, mode or self.mode, caches)
        out = []
        for _ in range(max_new_tokens):
            nxt = self.logits(h[:, -1:]).argmax(-1)                             # (B, 1)
            out.append(nxt)
            h = self.hidden(self.embed(nxt), caches)
        return torch.cat(out, dim=1)
