"""MergeImageTokens: image tokens overwrite the embeddings of image placeholder tokens (nanoVLM, SmolVLM, LLaVA).

Source: nanoVLM `models/vision_language_model.py` (`_replace_img_tokens_with_embd`):
    out = text.clone();  out[ids == image_token_id] = image.reshape(-1, D)
Inputs: text embeddings (B, T, D), image tokens (B, N, D) and the ids (B, T) that produced the embeddings; output
(B, T, D). The k-th placeholder in row-major (batch, then position) order receives the k-th image token in the same
order, so every example needs exactly N placeholders (the runtime checks that the counts match; the compiler
cannot, the ids are data). No parameters; 0 FLOPs (a copy).
"""
from __future__ import annotations

from pydantic import Field

from ..ir import IDS, TOKENS
from ..registry import Op, Params, Slot, register


class MergeParams(Params):
    image_token_id: int = Field(ge=0, le=100_000_000, description="Id of the image placeholder token.")


@register
class MergeImageTokens(Op):
    name = "MergeImageTokens"
    Params = MergeParams
    slots = (Slot("text", (TOKENS,)), Slot("image", (TOKENS,)), Slot("ids", (IDS,)))
    doc = "Text embeddings (B, T, D) with the placeholders' rows replaced, in order, by image tokens (B, N, D)."
    decode = "text_join"      # new text tokens pass through: the image part is in the caches after the prefill

    @classmethod
    def ids_bound(cls, p):
        return p.image_token_id          # text ids below the placeholder; `place_ids` writes the placeholders

    @classmethod
    def ids_reserved(cls, p, ins, env) -> int:
        return ins[1].shape[1].eval(env)           # N image placeholders per example

    @classmethod
    def place_ids(cls, p, ids, ins, env) -> None:
        """Valid example ids: each example's N image placeholders at positions 1 .. N."""
        n_img = ins[1].shape[1].eval(env)
        ids[:, 1:1 + n_img] = p.image_token_id

    @classmethod
    def resolve(cls, p, ins, diag):
        text, image, ids = ins
        if text.width != image.width:
            diag("", f"image tokens {image} and text embeddings {text} have different widths",
                 "project the image tokens to the language model's width first")
        if tuple(ids.shape) != tuple(text.shape[:2]):
            diag("", f"ids {ids} do not match the text embeddings {text}",
                 "pass the token ids the embeddings were looked up from")
        return p

    @classmethod
    def shape(cls, p, ins):
        return {"out": ins[0]}                                                   # (B, T, D)

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        return ctx.full(ins[0].numel())
