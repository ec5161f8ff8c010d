"""GQA_MoE_Layer: a decoder block whose feed-forward is a mixture of experts (Qwen2-MoE, Qwen3-MoE, Mixtral,
DeepSeek-V3's feed-forward, OMNI-LITE).

The attention half is TransformerBlock's (GQA, RoPE, RMSNorm, causal by default); the feed-forward is
  router       logits = x R^T, R (E, D), no bias, and one of
                 softmax          p = softmax(logits) over experts, then the top_k largest (renormalised to sum 1 if
                                  norm_topk_prob: Mixtral always, Qwen2-MoE / Qwen3-MoE by config);
                 sigmoid_group    DeepSeek-V3: s = sigmoid(logits); experts are chosen by s + b (b the
                                  `e_score_correction_bias` buffer, E): the E experts form n_group groups, a group
                                  scores the sum of its 2 best, the topk_group best groups stay, and the top_k
                                  experts among them are taken; their weights are s (renormalised to sum 1 if
                                  norm_topk_prob, + 1e-20) times routed_scaling_factor;
  experts      stacked as transformers 5.x stores them: gate_up (E, 2F, D) with gate rows [0:F] and up rows [F:2F],
               down (E, D, F); expert e computes down_e (act(gate_e x) * up_e x); out = sum_k p_k expert_{i_k}(x);
  shared       optional dense gated MLP of width shared_expert_dim, scaled by sigmoid(x g^T), g (1, D) when
               shared_expert_gate (Qwen2-MoE; DeepSeek-V3's shared experts are ungated and may be 0 wide: a
               zero-width shared expert with its gate is what Qwen2-MoE builds for shared_expert_intermediate_size 0).
Mixed stacks: `ffn_types` gives each stacked layer's feed-forward, "moe" or "dense" (a plain gated MLP of width
ff_dim named as the family's dense MLP), as transformers builds Qwen2-MoE / Qwen3-MoE with decoder_sparse_step and
mlp_only_layers, and DeepSeek-V3's first_k_dense_replace layers.
Names are the block's naming family (`names`): "qwen2_moe" / "mixtral" give transformers' keys
(`mlp.gate.weight`, `mlp.experts.gate_up_proj`, `mlp.experts.down_proj`, `mlp.shared_expert.*`,
`mlp.shared_expert_gate.weight`; DeepSeek-V3 `mlp.shared_experts.*`, `mlp.gate.e_score_correction_bias`). Expert tensors are declared with experts=E, top_k=k, so the active parameter
count takes k / E of them; the correction bias is a buffer (stored, not a parameter). Sources:
transformers/models/{qwen2_moe,qwen3_moe,mixtral,deepseek_v3}/modeling_*.py.
Spelled in the seed as {"type": "TransformerBlock", "params": {"type": "GQA_MoE_Layer", ...}}.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..registry import W, register
from ..activations import GATED, MLPKind
from .transformer import Block, BlockParams, resolve_attention, stack_count

SEED_EXPERT_DIM = 768   # the width at which OMNI-LITE's "480M active / 2.5B total" claims hold (seed-systems.md)


class MoEParams(BlockParams):
    # decoder defaults (OMNI-LITE: causal GQA with RoPE, RMSNorm, SwiGLU experts, no biases)
    causal: bool = Field(True, description="Causal self-attention.")
    rope: Literal["none", "1d", "2d"] = Field("1d", description="Rotary positions (1d over the sequence).")
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    mlp: MLPKind = Field("swiglu", description="Expert MLP: a gated kind (swiglu | geglu | geglu_tanh | gated_<act>).")
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
                                             description="Width of a shared (always active) expert, gated as "
                                                         "shared_expert_gate says; none if absent. 0: a zero-width "
                                                         "expert (and its (1, D) gate), as transformers builds for "
                                                         "shared_expert_intermediate_size 0 (adds nothing).")
    shared_expert_gate: bool = Field(True, description="The shared expert is scaled by sigmoid(x g^T), g (1, D) "
                                                       "(Qwen2-MoE); false for DeepSeek-V3's shared experts.")
    norm_topk_prob: bool = Field(True, description="Renormalise the top-k probabilities to sum 1 (Mixtral: true; "
                                                   "Qwen2-MoE: config.norm_topk_prob).")
    router: Literal["softmax", "sigmoid_group"] = Field(
        "softmax", description="softmax top-k (Qwen2-MoE, Mixtral) or DeepSeek-V3's group-limited sigmoid routing "
                               "with a score-correction bias.")
    n_group: int = Field(1, ge=1, le=4096, description="sigmoid_group: expert groups (config.n_group).")
    topk_group: int = Field(1, ge=1, le=4096, description="sigmoid_group: groups kept per token.")
    routed_scaling_factor: float = Field(1.0, gt=0, description="sigmoid_group: routed weights are multiplied by it.")
    ffn_types: Optional[list[Literal["moe", "dense"]]] = Field(
        None, description="Feed-forward of each stacked layer: moe (experts) or dense (gated MLP of width ff_dim); "
                          "default every layer moe.")
    ffn_type: Literal["moe", "dense"] = Field("moe", description="Resolved per layer from ffn_types.")


def check_experts(diag, num_experts: int, top_k: int, ffn_types: Optional[list[str]], ff_dim: Optional[int],
                  layers: int, router: str, n_group: int, topk_group: int) -> None:
    """The expert settings' consistency, for GQA_MoE_Layer and for DecoderLM before it expands (one error each)."""
    grouped = router == "sigmoid_group"
    if grouped and num_experts % n_group:
        diag("n_group", f"n_group {n_group} does not divide num_experts {num_experts}")
    elif grouped and topk_group > n_group:
        diag("topk_group", f"topk_group {topk_group} exceeds n_group {n_group}")
    elif top_k > num_experts:
        diag("top_k", f"top_k {top_k} exceeds num_experts {num_experts}")
    elif grouped and top_k > topk_group * (num_experts // n_group):
        diag("top_k", f"top_k {top_k} exceeds the {topk_group * (num_experts // n_group)} experts of the "
                      f"{topk_group} kept groups", "raise topk_group or lower top_k")
    dense = ffn_types is not None and "dense" in ffn_types
    if ffn_types is not None and len(ffn_types) != layers:
        diag("ffn_types", f"ffn_types has {len(ffn_types)} entries for {layers} layers")
    if ff_dim is not None and not dense:
        diag("ff_dim", "a mixture-of-experts stack without dense layers has no ff_dim",
             "give the experts' width as expert_dim (and shared_expert_dim for a shared expert), or mark dense "
             "layers in ffn_types")
    if dense and ff_dim is None:
        diag("ff_dim", "ffn_types has dense layers: give their MLP width as ff_dim")


@register
class GQA_MoE_Layer(Block):
    name = "GQA_MoE_Layer"
    Params = MoEParams
    kind_of = "TransformerBlock"
    doc = __doc__

    @classmethod
    def check(cls, p, diag):
        super().check(p, diag)
        if p.mlp not in GATED:
            diag("mlp", f"experts are gated MLPs; mlp {p.mlp!r} is not one of {', '.join(GATED)}")
        if p.mlp_bias:
            diag("mlp_bias", "expert biases are not supported", "set mlp_bias false")
        check_experts(diag, p.num_experts, p.top_k, p.ffn_types, p.ff_dim, stack_count(p), p.router, p.n_group,
                      p.topk_group)

    @classmethod
    def unroll(cls, p, i: int, n: int):
        p = super().unroll(p, i, n)
        return p.model_copy(update={"ffn_type": p.ffn_types[i]}) if p.ffn_types is not None else p

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
        if p.ffn_type == "dense":
            return super().ffn_weights(p, n)
        D, F, E, k = p.D, p.expert_dim, p.num_experts, p.top_k
        w = {n("router") + ".weight": W((E, D), "other")}
        if p.router == "sigmoid_group":
            w[n("router") + ".e_score_correction_bias"] = W((E,), "other", init="zeros", buffer=True)
        w[n("experts_gate_up")] = W((E, 2 * F, D), experts=E, top_k=k)      # gate rows [0:F], up rows [F:2F]
        w[n("experts_down")] = W((E, D, F), experts=E, top_k=k)
        if p.shared_expert_dim is not None:
            S = p.shared_expert_dim
            w[n("shared_gate") + ".weight"] = W((S, D))
            w[n("shared_up") + ".weight"] = W((S, D))
            w[n("shared_down") + ".weight"] = W((D, S))
            if p.shared_expert_gate:
                w[n("shared_router") + ".weight"] = W((1, D), "other")
        return w

    @classmethod
    def ffn_handles(cls, p):
        """The router, the stacked experts (tensors) and the shared expert; no dense MLP (dense layers: Block's)."""
        if p.ffn_type == "dense":
            return super().ffn_handles(p)
        return {**{a: None for a in super().ffn_handles(p)},
                **{r: r for r in ("router", "experts_gate_up", "experts_down", "shared_gate", "shared_up",
                                  "shared_down", "shared_router")}}

    @classmethod
    def ffn_flops(cls, p, rows: int) -> int:
        if p.ffn_type == "dense":
            return super().ffn_flops(p, rows)
        D, F = p.D, p.expert_dim
        f = 2 * rows * D * p.num_experts                       # router
        f += p.top_k * 2 * rows * D * F * 3                    # top_k gated experts per token
        if p.shared_expert_dim is not None:
            f += 2 * rows * D * p.shared_expert_dim * 3        # shared expert
            if p.shared_expert_gate:
                f += 2 * rows * D                              # and its gate
        return f

    @classmethod
    def ffn_width(cls, p) -> int:
        """Hidden elements per token: the router's scores, top_k expert hiddens (gate|up), the shared expert's."""
        if p.ffn_type == "dense":
            return super().ffn_width(p)
        return p.num_experts + p.top_k * 2 * p.expert_dim + 2 * (p.shared_expert_dim or 0)

