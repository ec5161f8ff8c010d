"""FoveatedVLM: fVLM's DINOv2 deep-query encoder + SmolLM2, one node with its own forward.

Source: the published release code (spsanps/nanoSmol `fVLM/release/model/{encoder,foveated_vlm}.py`) and
reference/seed-systems.md. Parameter names are the checkpoint's, relative to the node (the spec calls it `fvlm`, so
an importer maps `k` -> `fvlm.k`):
  encoder.dino.*            DINOv2 in the transformers 4.x layout: embeddings.{cls_token, mask_token,
                            position_embeddings, patch_embeddings.projection}, encoder.layer.{i}.* (block names of
                            the "dinov2" family), layernorm
  encoder.query_input_proj  Linear(query_dim -> D, no bias);  encoder.output_proj  Linear(D -> D)
  llm.*                     LlamaForCausalLM: model.embed_tokens, model.layers.{i}.* ("llama" family), model.norm,
                            lm_head (declared only when not tied: a tied head owns no tensor, it reads embed_tokens)
  dino_to_llm               Linear(D -> H);  llm_to_query  Linear(H -> query_dim);  q_static, q_init  (1, query_dim)
Computation (video (B, F, 3, S, S), ids (B, T) -> logits (B, F + T, V)):
  1. every frame goes through DINOv2 once (CLS + (S/P)^2 patches, positions resized bicubically from the
     pos_grid table); layer l caches K_l, V_l = key/value(norm1_l(h)) of all its tokens;
  2. a query q (B*F, query_dim) -> x = query_input_proj(q) runs through all layers attending only to that layer's
     cache: x += ls1(o(attn(query(norm1(x)), K_l, V_l))); x += ls2(mlp(norm2(x))); z = output_proj(layernorm(x));
  3. the frame token dino_to_llm(z) * visual_scale is prepended to the text embeddings (no placeholder tokens).
  Modes (`mode` is the default; the torch module takes `mode=` per call):
    coarse_only     q_static for every frame, one LLM pass over [F visual, T text];
    coarse_fine     a coarse pass (q_static) through the LLM over the F visual tokens alone; llm_to_query of the
                    hidden state at frame t is the query of frame t+1 (q_init for frame 0); a fine query pass and
                    one LLM pass over [F fine visual, T text];
    autoregressive  frame by frame with the LLM's KV cache: q_init for frame 0, then llm_to_query of the last
                    hidden state; then the text over the cache.
  Logits cover all F + T positions in every mode (the release code returns only the text positions in
  coarse_fine; slice [:, F:] for those).
Why one node: coarse_fine feeds the LLM's output back into the encoder's query (the LLM runs twice with the same
weights) and autoregressive interleaves encoder and LLM per frame. Neither is a DAG over distinct layers, and the
graph has no shared-weight loops; the node declares every tensor and cost, and its torch module runs the loop.
Costs follow the mode (prefill FLOPs count the DINO pass once, one query pass per query set, and each LLM pass);
decode state is the LLM's KV cache over F + T positions; the per-layer DINO K/V cache is transient workspace.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..dims import Dim
from ..ir import IDS, TOKENS, VIDEO, TensorType
from ..registry import Ctx, Op, Params, Slot, W, linear_flops, register
from .transformer import BlockParams, TransformerBlock
from .vision import PatchEmbed, PatchEmbedParams

_sub = ConfigDict(strict=True, extra="forbid", frozen=True)


class DinoConfig(BaseModel):
    """DINOv2 (transformers Dinov2Config); defaults are DINOv2-small."""
    model_config = _sub
    note: Optional[str] = Field(None, description="Free text (e.g. the checkpoint).")
    hidden: int = Field(384, ge=1, le=100_000)
    layers: int = Field(12, ge=1, le=1024)
    heads: int = Field(6, ge=1, le=1024)
    ff_dim: int = Field(1536, ge=1, le=1_000_000, description="mlp_ratio x hidden.")
    patch_size: int = Field(14, ge=1, le=1024)
    pos_grid: int = Field(37, ge=1, le=4096, description="Side of the position table (image_size / patch: 518/14).")
    norm_eps: float = Field(1e-6, gt=0)
    layer_scale: float = Field(1.0, description="LayerScale init (layerscale_value).")


class LlmConfig(BaseModel):
    """Llama (transformers LlamaConfig); defaults are SmolLM2-135M."""
    model_config = _sub
    note: Optional[str] = Field(None, description="Free text (e.g. the checkpoint).")
    vocab_size: int = Field(49152, ge=1, le=10_000_000)
    hidden: int = Field(576, ge=1, le=100_000)
    layers: int = Field(30, ge=1, le=1024)
    heads: int = Field(9, ge=1, le=1024)
    kv_heads: int = Field(3, ge=1, le=1024)
    ff_dim: int = Field(1536, ge=1, le=1_000_000)
    rope_theta: float = Field(100000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    tie: bool = Field(True, description="lm_head shares model.embed_tokens.weight.")


Mode = Literal["coarse_only", "coarse_fine", "autoregressive"]
MODES = ("coarse_only", "coarse_fine", "autoregressive")


class FoveatedParams(Params):
    dino: DinoConfig = Field(DinoConfig(), description="The DINOv2 encoder (default DINOv2-small).")
    llm: LlmConfig = Field(LlmConfig(), description="The language model (default SmolLM2-135M).")
    query_dim: int = Field(384, ge=1, le=100_000, description="Width of q_static, q_init and llm_to_query's output.")
    visual_scale: float = Field(0.14, description="Visual tokens are dino_to_llm(z) times this.")
    mode: Mode = Field("coarse_fine", description="Default forward mode (and the mode the costs describe).")
    grid: int = Field(0, ge=0, description="Resolved: patches per side of the input frames.")

    @property
    def dino_head_dim(self) -> int:
        """The encoder's head size (the runtimes read it)."""
        return self.dino.hidden // self.dino.heads


def dino_embed(p: FoveatedParams) -> PatchEmbedParams:
    """DINOv2's embeddings as a PatchEmbed (transformers Dinov2Embeddings; 4.x and 5.x use the same names)."""
    d = p.dino
    return PatchEmbedParams(embed_dim=d.hidden, patch_size=d.patch_size, in_channels=3, pos_grid=[d.pos_grid] * 2,
                            pos_cls=True, cls_token=True, mask_token=True, interpolate="bicubic", names="dinov2",
                            grid=[p.grid or d.pos_grid] * 2)


def dino_block(p: FoveatedParams) -> BlockParams:
    d = p.dino
    return BlockParams(embed_dim=d.hidden, num_heads=d.heads, num_kv_heads=d.heads, head_dim=p.dino_head_dim,
                       ff_dim=d.ff_dim, mlp="gelu", norm="layernorm", norm_eps=d.norm_eps,
                       layer_scale=d.layer_scale, names="dinov2")


def llm_block(p: FoveatedParams) -> BlockParams:
    m = p.llm
    return BlockParams(embed_dim=m.hidden, num_heads=m.heads, num_kv_heads=m.kv_heads, head_dim=m.hidden // m.heads,
                       ff_dim=m.ff_dim, mlp="swiglu", mlp_bias=False, norm="rmsnorm", norm_eps=m.norm_eps,
                       attn_bias=[], causal=True, rope="1d", rope_theta=m.rope_theta, names="llama")


@register
class FoveatedVLM(Op):
    name = "FoveatedVLM"
    Params = FoveatedParams
    slots = (Slot("frames", (VIDEO,)), Slot("ids", (IDS,)))
    @classmethod
    def ids_bound(cls, p):
        return p.llm.vocab_size

    doc = ("fVLM: DINOv2 with a deep query (one token per frame) + a Llama LM; video (B, F, 3, S, S) and ids (B, T) "
           "-> logits (B, F + T, V). Modes coarse_only | coarse_fine | autoregressive.")

    @classmethod
    def check(cls, p, diag):
        if p.dino.hidden % p.dino.heads:
            diag("dino.heads", f"heads {p.dino.heads} do not divide the width {p.dino.hidden}")
        if p.llm.hidden % p.llm.heads or p.llm.heads % p.llm.kv_heads:
            diag("llm.heads", f"heads {p.llm.heads} must divide the width {p.llm.hidden} and be a multiple of "
                              f"kv_heads {p.llm.kv_heads}")

    @classmethod
    def resolve(cls, p, ins, diag):
        v = ins[0]
        if len(v.shape) != 5:
            diag("", f"frames must be (B, F, 3, S, S), got {v}")
            return p
        c, h, w = v.shape[2:]
        if not (h.is_const and w.is_const) or h != w:
            diag("", f"frames must be square with a fixed size, got {v}")
            return p
        if c.is_const and c.const != 3:
            diag("", f"frames must have 3 channels, got {v}")
        if h.const % p.dino.patch_size:
            diag("dino.patch_size", f"frame size {h.const} is not a multiple of the patch {p.dino.patch_size}")
            return p
        if ins[1].shape[0] != v.shape[0]:
            diag("", f"frames {v} and ids {ins[1]} have different batch sizes")
        return p.model_copy(update={"grid": h.const // p.dino.patch_size})

    @classmethod
    def shape(cls, p, ins):
        v, ids = ins
        return {"out": TensorType((v.shape[0], v.shape[1] + ids.shape[1], Dim.of(p.llm.vocab_size)), TOKENS)}

    @classmethod
    def weights(cls, p):
        d, m, D, H, Q = p.dino, p.llm, p.dino.hidden, p.llm.hidden, p.query_dim
        w: dict[str, W] = {}
        w.update({f"encoder.dino.embeddings.{k}": v for k, v in PatchEmbed.weights(dino_embed(p)).items()})
        blk = TransformerBlock.weights(dino_block(p))
        for i in range(d.layers):
            w.update({f"encoder.dino.encoder.layer.{i}.{k}": v for k, v in blk.items()})
        w["encoder.dino.layernorm.weight"] = W((D,), "norm")
        w["encoder.dino.layernorm.bias"] = W((D,), "norm", init="zeros")
        w["encoder.query_input_proj.weight"] = W((D, Q))
        w["encoder.output_proj.weight"] = W((D, D))
        w["encoder.output_proj.bias"] = W((D,), "bias")
        w["llm.model.embed_tokens.weight"] = W((m.vocab_size, H), "embedding")
        blk = TransformerBlock.weights(llm_block(p))
        for i in range(m.layers):
            w.update({f"llm.model.layers.{i}.{k}": v for k, v in blk.items()})
        w["llm.model.norm.weight"] = W((H,), "norm")
        if not m.tie:
            w["llm.lm_head.weight"] = W((m.vocab_size, H), "head")
        w.update({"dino_to_llm.weight": W((H, D)), "dino_to_llm.bias": W((H,), "bias"),
                  "llm_to_query.weight": W((Q, H)), "llm_to_query.bias": W((Q,), "bias"),
                  "q_static": W((1, Q), "other"), "q_init": W((1, Q), "other")})
        return w

    # --- costs ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _types(p, ins):
        """Tensor types of the inner passes: DINO tokens (B*F, n, D) and the LLM sequences."""
        v, ids = ins
        B, F_ = v.shape[0], v.shape[1]
        n = p.grid ** 2 + 1
        dino = TensorType((B * F_, Dim.of(n), Dim.of(p.dino.hidden)), TOKENS)
        visual = TensorType((B, F_, Dim.of(p.llm.hidden)), TOKENS)
        full = TensorType((B, F_ + ids.shape[1], Dim.of(p.llm.hidden)), TOKENS)
        return dino, visual, full, B * F_, n

    @classmethod
    def _query_passes(cls, p) -> int:
        return 2 if p.mode == "coarse_fine" else 1

    @classmethod
    def flops(cls, p, ins, outs, ctx: Ctx):
        dino, visual, full, frames, n = cls._types(p, ins)
        d, m, D, H, Q = p.dino, p.llm, p.dino.hidden, p.llm.hidden, p.query_dim
        rows = ctx.n(frames)                                  # frames (0 when decoding: the video is fixed)
        db, lb = dino_block(p), llm_block(p)
        total = linear_flops(rows * (n - 1), 3 * d.patch_size ** 2, D)
        total += d.layers * TransformerBlock.flops(db, [dino], {}, ctx)
        per_query = (linear_flops(rows, Q, D) + linear_flops(rows, D, D)            # query_input_proj, output_proj
                     + d.layers * (2 * linear_flops(rows, D, D) + 4 * rows * n * D   # query, o; scores + mix
                                   + 2 * linear_flops(rows, D, d.ff_dim))           # mlp
                     + linear_flops(rows, D, H))                                     # dino_to_llm
        total += cls._query_passes(p) * per_query
        if p.mode == "coarse_fine":
            total += m.layers * TransformerBlock.flops(lb, [visual], {}, ctx) + linear_flops(rows, H, Q)
        if p.mode == "autoregressive":
            total += linear_flops(rows, H, Q)
        total += m.layers * TransformerBlock.flops(lb, [full], {}, ctx)
        total += linear_flops(ctx.n(full.rows()), H, m.vocab_size)                  # lm_head, tied or not
        return total

    @classmethod
    def state(cls, p, ins, outs, ctx):
        _, _, full, _, _ = cls._types(p, ins)
        return p.llm.layers * TransformerBlock.state(llm_block(p), [full], {}, ctx)   # K, V per LLM layer

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        dino, _, full, frames, n = cls._types(p, ins)
        kv_cache = p.dino.layers * 2 * ctx.full(frames) * n * p.dino.hidden
        inner = max(TransformerBlock.workspace(dino_block(p), [dino], {}, ctx),
                    TransformerBlock.workspace(llm_block(p), [full], {}, ctx))
        return kv_cache + 2 * ctx.full(full.rows()) * p.llm.hidden + inner

    @classmethod
    def saved(cls, p, ins, outs, ctx):
        dino, visual, full, frames, n = cls._types(p, ins)
        s = p.dino.layers * TransformerBlock.saved(dino_block(p), [dino], {}, ctx)
        s += p.llm.layers * TransformerBlock.saved(llm_block(p), [full], {}, ctx)
        if p.mode == "coarse_fine":
            s += p.llm.layers * TransformerBlock.saved(llm_block(p), [visual], {}, ctx)
        q = ctx.full(frames) * p.dino.hidden
        return s + cls._query_passes(p) * p.dino.layers * q * (8 + p.dino.ff_dim // p.dino.hidden * 2)
