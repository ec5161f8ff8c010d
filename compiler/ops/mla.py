"""MLA_Layer: a decoder block with multi-head latent attention (DeepSeek-V2/V3) and GQA_MoE_Layer's feed-forward.

Attention, as transformers 5.x DeepseekV3Attention computes it (H heads, width D):
  query      q = q_b(RMSNorm(q_a(x)))  (q_a (r_q, D), q_b (H (n + r), r_q)), or q = q_proj(x) when q_lora_rank is
             null; per head the first n = qk_nope_head_dim dims pass, the last r = qk_rope_head_dim are rotated;
  latent     [c | k_r] = kv_a(x), kv_a (c + r, D) with c = kv_lora_rank; c is RMS-normalised (kv_a_norm), k_r is
             one rotated key part shared by every head;
  keys       per head k = [k_n | k_r] with [k_n | v] = kv_b(c), kv_b (H (n + v), c), v = v_head_dim;
  out        o_proj (D, H v) of softmax(q k^T * attn_scale) v; attn_scale defaults to (n + r)^-1/2, times
             mscale(factor, mscale_all_dim)^2 when the rope scaling has mscale_all_dim (DeepSeek's yarn).
RoPE on the r dims: interleaved pairs (x0, x1), (x2, x3) ... by default (`rope_interleave`, DeepSeek's layout),
else rotate-half. The latent norms use eps 1e-6 as transformers' DeepseekV3RMSNorm default (`latent_norm_eps`).

Decode state: the compressed latent, not the expanded keys and values: per token and layer kv_lora_rank +
qk_rope_head_dim elements (c after its norm, k_r after RoPE), what transformers 5.x's cache holds for this model;
the runtimes cache exactly that and expand it through kv_b at every call (the FLOPs count that expansion over all
cached positions). The feed-forward is GQA_MoE_Layer's (sigmoid_group routing, ungated shared experts and dense
first layers for DeepSeek-V3). Source: transformers/models/deepseek_v3/modeling_deepseek_v3.py.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from ..registry import State, W, register
from ..rope import yarn_get_mscale
from .moe import GQA_MoE_Layer, MoEParams
from .transformer import attn_pairs, declared, norm_weights


def check_rope_dim(diag, r: int) -> None:
    if r % 2:
        diag("qk_rope_head_dim", f"qk_rope_head_dim {r} must be even (rotated in pairs)")


class MLAParams(MoEParams):
    q_lora_rank: Optional[int] = Field(None, ge=1, le=1_000_000, description="Rank of the query's low-rank "
                                                                             "projection; null: one q_proj.")
    kv_lora_rank: int = Field(ge=1, le=1_000_000, description="Width c of the compressed key/value latent.")
    qk_nope_head_dim: int = Field(ge=0, le=4096, description="Query/key dims per head without RoPE (n).")
    qk_rope_head_dim: int = Field(ge=2, le=4096, description="Query/key dims per head with RoPE (r), shared by "
                                                             "every head's key.")
    v_head_dim: int = Field(ge=1, le=4096, description="Value dims per head.")
    rope_interleave: bool = Field(True, description="RoPE on interleaved pairs (DeepSeek's layout); false: "
                                                    "rotate-half.")
    mla_bias: bool = Field(False, description="Biases on q_a, kv_a and o (config.attention_bias).")
    latent_norm_eps: float = Field(1e-6, gt=0, description="eps of the q_a and kv_a RMSNorms.")


@register
class MLA_Layer(GQA_MoE_Layer):
    name = "MLA_Layer"
    Params = MLAParams
    kind_of = "TransformerBlock"
    doc = __doc__

    @classmethod
    def check(cls, p, diag):
        super().check(p, diag)
        check_rope_dim(diag, p.qk_rope_head_dim)
        if p.num_kv_heads is not None and p.num_kv_heads != p.num_heads:
            diag("num_kv_heads", "latent attention expands keys and values for every head: num_kv_heads must be "
                                 "num_heads")
        if p.layer_types is not None and set(p.layer_types) != {"full_attention"}:
            diag("layer_types", "latent attention layers are full_attention only")
        if p.qk_norm or p.fused_qkv or p.attn_bias or p.rope != "1d" or not p.causal:
            diag("rope", "latent attention is causal with 1d rope, without qk_norm, fused_qkv or attn_bias "
                         "(its biases are mla_bias)")

    @classmethod
    def resolve(cls, p, ins, diag):
        hd = p.qk_nope_head_dim + p.qk_rope_head_dim
        p = super().resolve(p.model_copy(update={"head_dim": hd, "rope_dim": p.qk_rope_head_dim}), ins, diag)
        s = p.rope_scaling
        if p.attn_scale is None and s is not None and s.mscale_all_dim and s.factor:
            # transformers' yarn_apply_mscale: scores scaled by mscale(factor, mscale_all_dim)^2 as well
            m = yarn_get_mscale(s.factor, s.mscale_all_dim)
            p = p.model_copy(update={"attn_scale": hd ** -0.5 * m * m})
        return p

    @classmethod
    def mixer_weights(cls, p, n):
        D, H, c, r = p.D, p.num_heads, p.kv_lora_rank, p.qk_rope_head_dim
        qk, nv = p.qk_nope_head_dim + r, p.qk_nope_head_dim + p.v_head_dim
        w: dict[str, W] = {}
        if p.q_lora_rank is None:
            w[n("q") + ".weight"] = W((H * qk, D))
        else:
            w[n("q_a") + ".weight"] = W((p.q_lora_rank, D))
            if p.mla_bias:
                w[n("q_a") + ".bias"] = W((p.q_lora_rank,), "bias")
            w.update(norm_weights(p, n("q_a_norm"), p.q_lora_rank))
            w[n("q_b") + ".weight"] = W((H * qk, p.q_lora_rank))
        w[n("kv_a") + ".weight"] = W((c + r, D))
        if p.mla_bias:
            w[n("kv_a") + ".bias"] = W((c + r,), "bias")
        w.update(norm_weights(p, n("kv_a_norm"), c))
        w[n("kv_b") + ".weight"] = W((H * nv, c))
        w[n("o") + ".weight"] = W((D, H * p.v_head_dim))
        if p.mla_bias:
            w[n("o") + ".bias"] = W((D,), "bias")
        return w

    @classmethod
    def handles(cls, p):
        """Block's, with the latent roles (no k / v projections: keys and values come from the latent)."""
        latent = ("q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "kv_b")
        return {**super().handles(p), **declared(p, cls.weights(p), {r: r for r in latent})}

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        x = ins[0]
        rows = ctx.n(x.rows())
        if rows == 0:
            return 0
        b, n_kv = ctx.full(x.shape[0]), ctx.full(x.shape[1])
        D, H, c, r = p.D, p.num_heads, p.kv_lora_rank, p.qk_rope_head_dim
        qk = p.qk_nope_head_dim + r
        q = 2 * rows * D * H * qk if p.q_lora_rank is None else 2 * rows * p.q_lora_rank * (D + H * qk)
        kv_a = 2 * rows * D * (c + r)
        kv_b = 2 * b * n_kv * c * H * (p.qk_nope_head_dim + p.v_head_dim)      # every cached latent, each call
        o = 2 * rows * H * p.v_head_dim * D
        pairs = attn_pairs(rows // max(b, 1), n_kv, True, None, ctx.mode == "decode")
        return q + kv_a + kv_b + o + 2 * b * pairs * H * (qk + p.v_head_dim) + cls.ffn_flops(p, rows)

    @classmethod
    def decode_state(cls, p, ins):
        # the latent c (after its norm) and the rotated shared key k_r: (B, 1, N, c) and (B, 1, N, r)
        return (State("k", "kv", (1, 1, p.kv_lora_rank), grows=1, axis=1),
                State("v", "kv", (1, 1, p.qk_rope_head_dim), grows=1, axis=1))

    @classmethod
    def _attention_elems(cls, p, rows: int, b: int, n: int) -> int:
        """Elements inside the attention: q, the latent, expanded keys and values, the score matrix."""
        H, qk = p.num_heads, p.qk_nope_head_dim + p.qk_rope_head_dim
        return (rows * (H * qk + p.kv_lora_rank + p.qk_rope_head_dim + (p.q_lora_rank or 0))
                + b * n * H * (qk + p.qk_nope_head_dim + p.v_head_dim) + b * H * n * n)

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        x = ins[0]
        rows, b, n = ctx.full(x.rows()), ctx.full(x.shape[0]), ctx.full(x.shape[1])
        return rows * p.D + max(cls._attention_elems(p, rows, b, n), rows * (cls.ffn_width(p) + p.D))

    @classmethod
    def saved(cls, p, ins, outs, ctx):
        x = ins[0]
        rows, b, n = ctx.full(x.rows()), ctx.full(x.shape[0]), ctx.full(x.shape[1])
        return rows * p.D + cls._attention_elems(p, rows, b, n) + rows * (3 * p.D + cls.ffn_width(p) * 2)
