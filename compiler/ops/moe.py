"""GQA_MoE_Layer: a decoder block whose feed-forward is a mixture of experts (Qwen2-MoE, Mixtral, OMNI-LITE).

The attention half is TransformerBlock's (GQA, RoPE, RMSNorm, causal by default); the feed-forward is
  router       logits = x R^T, R (E, D), no bias; p = softmax(logits) over experts, then the top_k largest
               (renormalised to sum 1 if norm_topk_prob: Mixtral always, Qwen2-MoE by config);
  experts      stacked as transformers 5.x stores them: gate_up (E, 2F, D) with gate rows [0:F] and up rows [F:2F],
               down (E, D, F); expert e computes down_e (act(gate_e x) * up_e x); out = sum_k p_k expert_{i_k}(x);
  shared       optional dense gated MLP of width shared_expert_dim scaled by sigmoid(x g^T), g (1, D) (Qwen2-MoE).
Names are the block's naming family (`names`): "qwen2_moe" / "mixtral" give transformers' keys
(`mlp.gate.weight`, `mlp.experts.gate_up_proj`, `mlp.experts.down_proj`, `mlp.shared_expert.*`,
`mlp.shared_expert_gate.weight`). Expert tensors are declared with experts=E, top_k=k, so the active parameter
count takes k / E of them. Sources: transformers/models/qwen2_moe/modeling_qwen2_moe.py, mixtral/modeling_mixtral.py.
Spelled in the seed as {"type": "TransformerBlock", "params": {"type": "GQA_MoE_Layer", ...}}.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..registry import W, register
from .transformer import GATED, Block, BlockParams, MLPKind, resolve_attention

SEED_EXPERT_DIM = 768   # the width at which OMNI-LITE's "480M active / 2.5B total" claims hold (seed-systems.md)


class MoEParams(BlockParams):
    # decoder defaults (OMNI-LITE: causal GQA with RoPE, RMSNorm, SwiGLU experts, no biases)
    causal: bool = Field(True, description="Causal self-attention.")
    rope: Literal["none", "1d", "2d"] = Field("1d", description="Rotary positions (1d over the sequence).")
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    mlp: MLPKind = Field("swiglu", description="Expert MLP: swiglu | geglu | geglu_tanh (gated kinds only).")
    mlp_bias: bool = Field(False, description="Biases in the experts (not supported: must stay false).")
    attn_bias: list[Literal["q", "k", "v", "o"]] = Field([], description="Projections with a bias "
                                                                       "(Qwen2-MoE: q, k, v).")
    # experts
    num_experts: int = Field(ge=1, le=4096, description="Routed experts E.")
    top_k: int = Field(ge=1, le=4096, description="Experts active per token.")
    expert_dim: Optional[int] = Field(None, ge=1, le=10_000_000,
                                      description="Width F of each expert's gated MLP; default the block width "
                                                  "(warned).")
    shared_expert_dim: Optional[int] = Field(None, ge=0, le=10_000_000,
                                             description="Width of a shared (always active) expert with a sigmoid "
                                                         "gate, as Qwen2-MoE; none if absent. 0: a zero-width "
                                                         "expert and its (1, D) gate, as transformers builds for "
                                                         "shared_expert_intermediate_size 0 (adds nothing).")
    norm_topk_prob: bool = Field(True, description="Renormalise the top-k probabilities to sum 1 (Mixtral: true; "
                                                   "Qwen2-MoE: config.norm_topk_prob).")


@register
class GQA_MoE_Layer(Block):
    name = "GQA_MoE_Layer"
    Params = MoEParams
    kind_of = "TransformerBlock"
    doc = __doc__

    @classmethod
    def check(cls, p, diag):
        super().check(p, diag)
        if p.top_k > p.num_experts:
            diag("top_k", f"top_k {p.top_k} exceeds num_experts {p.num_experts}")
        if p.mlp not in GATED:
            diag("mlp", f"experts are gated MLPs; mlp {p.mlp!r} is not one of {', '.join(GATED)}")
        if p.mlp_bias:
            diag("mlp_bias", "expert biases are not supported", "set mlp_bias false")
        if p.ff_dim is not None:
            diag("ff_dim", "GQA_MoE_Layer has no dense MLP: ff_dim is not used",
                 "give the experts' width as expert_dim (and shared_expert_dim for a shared expert)")

    @classmethod
    def resolve(cls, p, ins, diag):
        p = resolve_attention(p, ins, diag, default_ff=False)
        if p.expert_dim is None and p.D is not None:
            diag("expert_dim", f"expert_dim not given: using {p.D} (the block width)",
                 f"state expert_dim; OMNI-LITE's claims (480M active, 2.5B total) hold for SwiGLU experts about "
                 f"{SEED_EXPERT_DIM} wide", severity="warning")
            p = p.model_copy(update={"expert_dim": p.D})
        return p

    @classmethod
    def ffn_weights(cls, p, n):
        D, F, E, k = p.D, p.expert_dim, p.num_experts, p.top_k
        w = {n("router") + ".weight": W((E, D), "other"),
             n("experts_gate_up"): W((E, 2 * F, D), experts=E, top_k=k),     # gate rows [0:F], up rows [F:2F]
             n("experts_down"): W((E, D, F), experts=E, top_k=k)}
        if p.shared_expert_dim is not None:
            S = p.shared_expert_dim
            w[n("shared_gate") + ".weight"] = W((S, D))
            w[n("shared_up") + ".weight"] = W((S, D))
            w[n("shared_down") + ".weight"] = W((D, S))
            w[n("shared_router") + ".weight"] = W((1, D), "other")
        return w

    @classmethod
    def ffn_flops(cls, p, rows: int) -> int:
        D, F = p.D, p.expert_dim
        f = 2 * rows * D * p.num_experts                       # router
        f += p.top_k * 2 * rows * D * F * 3                    # top_k gated experts per token
        if p.shared_expert_dim is not None:
            f += 2 * rows * D * p.shared_expert_dim * 3 + 2 * rows * D   # shared expert and its gate
        return f

    @classmethod
    def ffn_width(cls, p) -> int:
        """Hidden elements per token: the router's scores, top_k expert hiddens (gate|up), the shared expert's."""
        return p.num_experts + p.top_k * 2 * p.expert_dim + 2 * (p.shared_expert_dim or 0)

