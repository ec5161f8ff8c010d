"""Tiny transformers mixture-of-experts models (Qwen2-MoE / Qwen3-MoE mixed stacks, DeepSeek-V3) shared by the torch
and MLX family tests (tests/test_moe_families.py, tests/test_moe_families_mlx.py), and the token ids they run on. A
helper module, not a test module: tests import it, never each other.
"""
from __future__ import annotations

import torch
import transformers as tf

# --- tiny configs ---------------------------------------------------------------------------------------------------
_BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
             rms_norm_eps=1e-6)
# name: (model class, config class, tiny config)
TINY = {
    # dense layers 0 (mlp_only_layers) and 2 (decoder_sparse_step 2), experts at 1 and 3
    "qwen2_moe_mixed": (tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig, dict(
        _BASE, num_hidden_layers=4, moe_intermediate_size=32, shared_expert_intermediate_size=48, num_experts=4,
        num_experts_per_tok=2, decoder_sparse_step=2, mlp_only_layers=[0], norm_topk_prob=False)),
    "qwen3_moe": (tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig, dict(
        _BASE, num_hidden_layers=2, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        norm_topk_prob=True)),
    "qwen3_moe_mixed": (tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig, dict(
        _BASE, num_hidden_layers=3, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        decoder_sparse_step=1, mlp_only_layers=[1], norm_topk_prob=False)),
    # 8 experts in 4 groups, 2 groups kept, top 3; q low-rank; one dense layer first; yarn with mscale_all_dim
    "deepseek_v3": (tf.DeepseekV3ForCausalLM, tf.DeepseekV3Config, dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=2, n_routed_experts=8, n_group=4,
        topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1, kv_lora_rank=24, q_lora_rank=32,
        qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10, routed_scaling_factor=2.5, norm_topk_prob=True,
        rms_norm_eps=1e-6, max_position_embeddings=64, rope_scaling=dict(
            type="yarn", factor=4.0, original_max_position_embeddings=16, mscale=1.0, mscale_all_dim=0.8,
            beta_fast=32, beta_slow=1))),
    "deepseek_v3_plain_q": (tf.DeepseekV3ForCausalLM, tf.DeepseekV3Config, dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=4, n_group=1,
        topk_group=1, num_experts_per_tok=2, first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=None,
        qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, routed_scaling_factor=1.0, norm_topk_prob=False,
        rope_interleave=False)),
}


def hf_model(name: str, seed: int = 0):
    """The tiny transformers model `name` on its exact (eager) paths, every tensor perturbed from `seed` (the
    correction bias too, so that it changes which experts are chosen)."""
    M, C, kw = TINY[name]
    torch.manual_seed(seed)
    m = M(C(**kw, attn_implementation="eager", experts_implementation="eager")).eval()
    with torch.no_grad():
        for k, t in m.state_dict().items():
            if t.dim() > 1:
                t.normal_(0.0, 0.2)
            elif k.endswith("e_score_correction_bias"):
                t.copy_(0.3 * torch.randn_like(t))
            else:
                t.add_(0.1 * torch.randn_like(t))
    return m


IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
