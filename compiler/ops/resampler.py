"""PerceiverResampler: a fixed set of learned latents reads a variable set of media tokens (Flamingo).

Source: Alayrac et al. 2022 (Flamingo), section 2.1 and appendix A.1.1; open_flamingo `src/helpers.py`
(PerceiverAttention, PerceiverResampler). Spelled in the OMNI-LITE seed as
{"type": "TransformerBlock", "params": {"type": "PerceiverResampler", "num_latents": 64, "embed_dim": 2048}}.

    x   = media_proj(media)                           (B, N, D)   only when the media width kv_dim != D
    lat = latents                                     (B, L, D)   learned, shared by every example
    per layer i (`num_layers` layers):
        kv  = concat(norm_media(x), norm_latents(lat))            (B, N + L, D)   latents attend to media + latents
        lat = lat + o_proj(attn(q_proj(norm_latents(lat)), k_proj(kv), v_proj(kv)))
        lat = lat + mlp.fc2(gelu(mlp.fc1(ff_norm(lat))))
    out = norm(lat)                                   (B, L, D)
Attention is bidirectional with `num_heads` x `head_dim` (inner width need not be D, as in Flamingo); projections
and the MLP have no biases (Flamingo's), LayerNorms have weight and bias (eps 1e-5). Unspecified depth, heads and
MLP width take Flamingo's values with a warning: num_layers 6, 8 heads of 64, ff_dim 4 D. (The depth is
`num_layers`, not `depth`: a `depth` param makes the lowering number the node as a stack, `resampler.0`.)
Decode state: none. The L output tokens enter the language model's context, whose KV cache holds them.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from ..dims import Dim
from ..ir import TOKENS, TensorType
from ..registry import Op, Params, Slot, W, linear_flops, register

DEFAULT_DEPTH, DEFAULT_HEADS, DEFAULT_HEAD_DIM, FF_MULT = 6, 8, 64, 4


class ResamplerParams(Params):
    num_latents: int = Field(ge=1, le=65536, description="Output tokens L (learned latents).")
    embed_dim: int = Field(ge=1, le=1_000_000, description="Latent width D (the output width).")
    kv_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Media width; inferred from the input.")
    num_layers: Optional[int] = Field(None, ge=1, le=256, description=f"Layers (depth); default {DEFAULT_DEPTH} "
                                                                      "(Flamingo), warned.")
    num_heads: Optional[int] = Field(None, ge=1, le=4096, description=f"Heads; default {DEFAULT_HEADS}, warned.")
    head_dim: Optional[int] = Field(None, ge=1, le=4096, description=f"Head size; default {DEFAULT_HEAD_DIM}.")
    ff_dim: Optional[int] = Field(None, ge=1, le=10_000_000, description="MLP width; default 4 D, warned.")
    norm_eps: float = Field(1e-5, gt=0)

    @property
    def inner(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def scale(self) -> float:
        """Attention score scale (the runtimes read it): head_dim^-0.5."""
        return self.head_dim ** -0.5


@register
class PerceiverResampler(Op):
    name = "PerceiverResampler"
    Params = ResamplerParams
    kind_of = "TransformerBlock"
    slots = (Slot("media", (TOKENS,)),)
    doc = "Learned latents cross-attend to media tokens (Flamingo): (B, N, kv_dim) -> (B, num_latents, D)."

    @classmethod
    def in_width(cls, p):
        return p.kv_dim

    @classmethod
    def resolve(cls, p, ins, diag):
        x = ins[0]
        up = {}
        if p.kv_dim is None:
            up["kv_dim"] = x.width
        elif x.width is not None and x.width != p.kv_dim:
            diag("kv_dim", f"kv_dim is {p.kv_dim} but the media tokens are {x.width} wide ({x})",
                 f"drop kv_dim (it is inferred) or set it to {x.width}")
            return p
        if p.num_layers is None:
            up["num_layers"] = DEFAULT_DEPTH
            diag("num_layers", f"num_layers not given: using {DEFAULT_DEPTH} layers (Flamingo)", "state num_layers",
                 severity="warning")
        if p.num_heads is None:
            up["num_heads"] = DEFAULT_HEADS
            diag("num_heads", f"num_heads not given: using {DEFAULT_HEADS} heads (Flamingo)", "state num_heads",
                 severity="warning")
        up["head_dim"] = p.head_dim or DEFAULT_HEAD_DIM
        if p.ff_dim is None:
            up["ff_dim"] = FF_MULT * p.embed_dim
            diag("ff_dim", f"ff_dim not given: using {FF_MULT * p.embed_dim} ({FF_MULT} x embed_dim {p.embed_dim})",
                 "state ff_dim", severity="warning")
        return p.model_copy(update=up)

    @classmethod
    def shape(cls, p, ins):
        return {"out": TensorType((ins[0].shape[0], Dim.of(p.num_latents), Dim.of(p.embed_dim)), TOKENS)}

    @classmethod
    def weights(cls, p):
        D, I, F_ = p.embed_dim, p.inner, p.ff_dim
        w = {"latents": W((p.num_latents, D), "other")}
        if p.kv_dim != D:
            w["media_proj.weight"] = W((D, p.kv_dim))
            w["media_proj.bias"] = W((D,), "bias")
        for i in range(p.num_layers):
            b = f"layers.{i}."
            for n in ("norm_media", "norm_latents", "ff_norm"):
                w[b + n + ".weight"] = W((D,), "norm")
                w[b + n + ".bias"] = W((D,), "norm", init="zeros")
            w.update({b + "attn.q_proj.weight": W((I, D)), b + "attn.k_proj.weight": W((I, D)),
                      b + "attn.v_proj.weight": W((I, D)), b + "attn.o_proj.weight": W((D, I)),
                      b + "mlp.fc1.weight": W((F_, D)), b + "mlp.fc2.weight": W((D, F_))})
        w["norm.weight"] = W((D,), "norm")
        w["norm.bias"] = W((D,), "norm", init="zeros")
        return w

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        x = ins[0]
        b = ctx.n(x.shape[0])
        if b == 0:
            return 0                                   # decoding a token adds nothing: the media are fixed
        n, L, D, I = ctx.full(x.shape[1]), p.num_latents, p.embed_dim, p.inner
        total = linear_flops(b * n, p.kv_dim, D) if p.kv_dim != D else 0
        per_layer = (linear_flops(b * L, D, I) + 2 * linear_flops(b * (n + L), D, I)   # q; k, v over media + latents
                     + 4 * b * L * (n + L) * I                                       # scores and weighted sum
                     + linear_flops(b * L, I, D) + 2 * linear_flops(b * L, D, p.ff_dim))
        return total + p.num_layers * per_layer

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        x = ins[0]
        b, n, L = ctx.full(x.shape[0]), ctx.full(x.shape[1]), p.num_latents
        media = b * n * p.embed_dim                                   # the projected (and normed) media
        attn = b * (n + L) * (p.embed_dim + 2 * p.inner) + b * p.num_heads * L * (n + L)
        return media + max(attn, b * L * p.ff_dim)
