"""DecoderLM: a decoder-only language model as one layer, expanded into the layers that make it.

  ids (B, T) -> Embedding (x sqrt(D) for Gemma) -> TransformerBlock x layers (GQA_MoE_Layer when num_experts)
             -> final RMSNorm -> LM head Linear (tied to the embedding when `tie`) -> logits (B, T, V)

The sub-layer ids reproduce each family's checkpoint names, so a transformers state dict loads with the prefix map
"" -> "<this layer's id>.":
  llama, gemma3, qwen2_moe, mixtral   model.embed_tokens, model.layers.{i}, model.norm, lm_head
  lfm2                                model.embed_tokens, model.layers.{i}, model.embedding_norm, lm_head
  nanovlm_lm                          token_embedding, blocks.{i}, norm, head
Every parameter left out takes the family's default from PRESETS (transformers' config defaults for the HF
families; the published code's for nanoVLM), a table of data. Derived defaults (Gemma's layer pattern, embedding
scale and attention scale) are computed once, in `settings()`.
Sources: transformers/models/{llama,gemma3,lfm2,qwen2_moe,mixtral}/modeling_*.py; nanoVLM models/language_model.py.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import Field

from ..ir import IDS
from ..registry import Op, Params, Slot, register
from .transformer import LayerType, MLPKind

Family = Literal["llama", "gemma3", "lfm2", "qwen2_moe", "mixtral", "nanovlm_lm"]

_HF_IDS = {"embed": "model.embed_tokens", "layers": "model.layers", "norm": "model.norm", "head": "lm_head"}

# family -> defaults of every optional DecoderLM param (data, not code)
PRESETS: dict[str, dict[str, Any]] = {
    "llama": dict(ids=_HF_IDS, mlp="swiglu", norm_eps=1e-6, rope_theta=10000.0, tie=False),
    "gemma3": dict(ids=_HF_IDS, mlp="geglu_tanh", norm_eps=1e-6, norm_offset=1.0, post_norms=True, qk_norm=True,
                   head_dim=256, query_pre_attn_scalar=256.0, scale_embeddings=True, rope_theta=1e6,
                   rope_theta_local=1e4, sliding_window=4096, sliding_window_pattern=6, tie=True),
    "lfm2": dict(ids={**_HF_IDS, "norm": "model.embedding_norm"}, mlp="swiglu", norm_eps=1e-5, qk_norm=True,
                 rope_theta=1e6, conv_kernel=3, tie=True),
    "qwen2_moe": dict(ids=_HF_IDS, mlp="swiglu", norm_eps=1e-6, rope_theta=10000.0, attn_bias=["q", "k", "v"],
                      norm_topk_prob=False, tie=False),
    "mixtral": dict(ids=_HF_IDS, mlp="swiglu", norm_eps=1e-5, rope_theta=1e6, norm_topk_prob=True, tie=False),
    "nanovlm_lm": dict(ids={"embed": "token_embedding", "layers": "blocks", "norm": "norm", "head": "head"},
                       mlp="swiglu", norm_eps=1e-5, rope_theta=1e5, tie=True),
}
# defaults shared by every family unless its preset says otherwise
BASE = dict(mlp_bias=False, attn_bias=[], norm_offset=0.0, post_norms=False, qk_norm=False, scale_embeddings=False,
            query_pre_attn_scalar=None, attn_scale=None, rope_theta_local=None, rope_dim=None, head_dim=None,
            layer_types=None, sliding_window=None, sliding_window_pattern=None, conv_kernel=3, conv_bias=False,
            norm_topk_prob=True)


class DecoderLMParams(Params):
    family: Family = Field("llama", description="Checkpoint family: names of the sub-layers and weights, and the "
                                                "defaults of every parameter left out (PRESETS).")
    vocab_size: int = Field(ge=1, le=100_000_000, description="Vocabulary V.")
    hidden: int = Field(ge=1, le=1_000_000, description="Width D.")
    layers: int = Field(ge=1, le=4096, description="Number of decoder blocks.")
    heads: int = Field(ge=1, le=4096, description="Query heads.")
    kv_heads: Optional[int] = Field(None, ge=1, le=4096, description="Key/value heads (GQA); default heads.")
    head_dim: Optional[int] = Field(None, ge=1, le=4096, description="Head size; default hidden / heads "
                                                                     "(Gemma-3: 256).")
    ff_dim: Optional[int] = Field(None, ge=1, le=10_000_000, description="Dense MLP width (the effective one: LFM2's "
                                                                         "auto-adjusted width).")
    mlp: Optional[MLPKind] = Field(None, description="MLP kind (Llama swiglu, Gemma geglu_tanh).")
    mlp_bias: Optional[bool] = None
    attn_bias: Optional[list[Literal["q", "k", "v", "o"]]] = Field(None, description="Projections with a bias.")
    norm_eps: Optional[float] = Field(None, gt=0)
    norm_offset: Optional[float] = Field(None, description="RMSNorm scale offset (Gemma: 1).")
    post_norms: Optional[bool] = Field(None, description="Gemma-3 sandwich norms.")
    qk_norm: Optional[bool] = Field(None, description="Per-head RMSNorm of q and k (Gemma-3, LFM2).")
    scale_embeddings: Optional[bool] = Field(None, description="Multiply embeddings by sqrt(hidden) (Gemma).")
    attn_scale: Optional[float] = Field(None, gt=0, description="Score scale; default query_pre_attn_scalar^-0.5 "
                                                                "where the family has one, else head_dim^-0.5.")
    query_pre_attn_scalar: Optional[float] = Field(None, gt=0, description="Gemma: scores scaled by its -1/2 power.")
    layer_types: Optional[list[LayerType]] = Field(None, description="Mixer per layer: full_attention, "
                                                                     "sliding_attention, conv (LFM2).")
    sliding_window: Optional[int] = Field(None, ge=1, description="Keys a sliding layer's query sees, itself "
                                                                  "included.")
    sliding_window_pattern: Optional[int] = Field(None, ge=1, description="Gemma: without layer_types, every n-th "
                                                                          "layer is global, the others sliding.")
    rope_theta: Optional[float] = Field(None, gt=0)
    rope_theta_local: Optional[float] = Field(None, gt=0, description="rope_theta of sliding layers (Gemma-3).")
    rope_dim: Optional[int] = Field(None, ge=2, description="Rotated dims per head; default head_dim.")
    conv_kernel: Optional[int] = Field(None, ge=1, le=64, description="LFM2 short-convolution kernel (conv_L_cache).")
    conv_bias: Optional[bool] = None
    tie: Optional[bool] = Field(None, description="LM head shares the embedding matrix.")
    # mixture of experts (GQA_MoE_Layer blocks when num_experts is set)
    num_experts: Optional[int] = Field(None, ge=1, le=4096)
    top_k: Optional[int] = Field(None, ge=1, le=4096)
    expert_dim: Optional[int] = Field(None, ge=1, le=10_000_000)
    shared_expert_dim: Optional[int] = Field(None, ge=0, le=10_000_000)
    norm_topk_prob: Optional[bool] = None


def settings(p: DecoderLMParams) -> dict[str, Any]:
    """Every parameter with the family defaults filled in and the derived defaults computed."""
    s = {**BASE, **PRESETS[p.family]}
    s.update({k: v for k, v in p.model_dump().items() if v is not None and k != "note"})
    s["kv_heads"] = s.get("kv_heads") or p.heads
    if s["scale_embeddings"]:
        s["embed_scale"] = math.sqrt(p.hidden)
    if s["attn_scale"] is None and s["query_pre_attn_scalar"]:
        s["attn_scale"] = s["query_pre_attn_scalar"] ** -0.5
    if s["layer_types"] is None and s["sliding_window_pattern"]:
        n = s["sliding_window_pattern"]
        s["layer_types"] = ["sliding_attention" if (i + 1) % n else "full_attention" for i in range(p.layers)]
    if s["layer_types"] and all(t == "full_attention" for t in s["layer_types"]):
        s["layer_types"] = None
    return s


@register
class DecoderLM(Op):
    name = "DecoderLM"
    Params = DecoderLMParams
    slots = (Slot("ids", (IDS,)),)
    composite = True
    doc = __doc__

    @classmethod
    def check(cls, p, diag):
        if p.layer_types is not None and len(p.layer_types) != p.layers:
            diag("layer_types", f"layer_types has {len(p.layer_types)} entries for {p.layers} layers")
        if p.num_experts is None:
            for f in ("top_k", "expert_dim", "shared_expert_dim"):
                if getattr(p, f) is not None:
                    diag(f, f"{f} is a mixture-of-experts setting, but num_experts is not given")
        elif p.top_k is None:
            diag("top_k", "a mixture of experts needs top_k (experts per token)")

    @classmethod
    def expand(cls, p, layer):
        s = settings(p)
        ids = s["ids"]
        block = dict(hidden_dim=p.hidden, depth=p.layers, num_heads=p.heads, num_kv_heads=s["kv_heads"],
                     head_dim=s["head_dim"], mlp=s["mlp"], mlp_bias=s["mlp_bias"], norm="rmsnorm",
                     norm_eps=s["norm_eps"], norm_offset=s["norm_offset"], post_norms=s["post_norms"],
                     attn_bias=s["attn_bias"], causal=True, qk_norm=s["qk_norm"], attn_scale=s["attn_scale"],
                     layer_types=s["layer_types"], rope="1d", rope_theta=s["rope_theta"],
                     rope_theta_local=s["rope_theta_local"], rope_dim=s["rope_dim"], conv_kernel=s["conv_kernel"],
                     conv_bias=s["conv_bias"], names=p.family)
        if s["layer_types"] and "sliding_attention" in s["layer_types"]:
            block["sliding_window"] = s["sliding_window"]
        if p.num_experts:
            kind = "GQA_MoE_Layer"
            block.update(num_experts=p.num_experts, top_k=p.top_k, expert_dim=p.expert_dim,
                         shared_expert_dim=p.shared_expert_dim, norm_topk_prob=s["norm_topk_prob"])
        else:
            kind = "TransformerBlock"
            block["ff_dim"] = p.ff_dim
        block = {k: v for k, v in block.items() if v is not None}
        embed = dict(num_embeddings=p.vocab_size, embedding_dim=p.hidden)
        if s.get("embed_scale"):
            embed["scale"] = s["embed_scale"]
        head = dict(in_features=p.hidden, out_features=p.vocab_size, bias=False, role="head")
        if s["tie"]:
            head["tie"] = ids["embed"]
        return [
            {"id": ids["embed"], "type": "Embedding", "params": embed, "inputs": ["$0"]},
            {"id": ids["layers"], "type": kind, "params": block, "inputs": [ids["embed"]]},
            {"id": ids["norm"], "type": "RMSNorm",
             "params": {"dim": p.hidden, "eps": s["norm_eps"], "offset": s["norm_offset"]}, "inputs": [ids["layers"]]},
            {"id": ids["head"], "type": "Linear", "params": head, "inputs": [ids["norm"]]},
        ]
