"""Tiny and full-size transformers language models shared by the tests (parity, generation, packing, the importer):
the reference models and their import into omnic. A helper module, not a test module: tests import it, never each
other.
"""
from __future__ import annotations

import torch
import transformers as tf
from safetensors import safe_open
from safetensors.torch import save_model

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config

# family: (model class, config class, tiny config, std of the perturbed matrices)
TINY = {
    "llama": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5), 0.2),
    "gemma3": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig, dict(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        rope_theta=1e6, rope_local_base_freq=1e4, pad_token_id=0, bos_token_id=2, eos_token_id=1), 0.05),
    "lfm2": (tf.Lfm2ForCausalLM, tf.Lfm2Config, dict(
        vocab_size=128, hidden_size=64, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, layer_types=["conv", "full_attention", "conv", "full_attention"], conv_L_cache=3,
        block_multiple_of=16, block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True, pad_token_id=0), 0.2),
    "qwen2_moe": (tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig, dict(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, moe_intermediate_size=32, shared_expert_intermediate_size=64, num_experts=4,
        num_experts_per_tok=2, norm_topk_prob=False), 0.2),
    "mixtral": (tf.MixtralForCausalLM, tf.MixtralConfig, dict(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2), 0.2),
}


def hf_model(family: str, seed: int = 0):
    """The tiny transformers model of `family`, on the exact (eager) paths, weights perturbed from `seed`."""
    M, C, kw, std = TINY[family]
    extra = {"experts_implementation": "eager"} if "num_experts_per_tok" in kw else {}
    torch.manual_seed(seed)
    m = M(C(**kw, attn_implementation="eager", **extra)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
            else:
                p.add_(0.1 * torch.randn_like(p))       # norms away from their init (ones / zeros)
    return m


def omnic_from_hf(hf, tmp_path):
    """Import hf's config, build the spec, load hf's weights from a safetensors file through the key map."""
    c = compiler.compile(spec_from_hf_config(hf.config.to_dict()))
    assert c.ok, "\n".join(d.render() for d in c.errors)
    path = tmp_path / "model.safetensors"
    save_model(hf, str(path))                            # tied tensors stored once, as save_pretrained does
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, tensors, hf_key_map(hf.config.model_type), strict=True)
    return model.eval()


# --- full-size configurations (backbones.md): config kwargs and the parameter count ----------------------------------
FULL = {
    "SmolLM2-135M": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=100000.0,
        rms_norm_eps=1e-5), 134_515_008),
    "SmolLM2-360M": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
        num_key_value_heads=5, tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=100000.0,
        rms_norm_eps=1e-5), 361_821_120),
    "Gemma-3-270m": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig, dict(
        vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
        max_position_embeddings=32768, rope_theta=1000000.0, rope_local_base_freq=10000.0,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3, tie_word_embeddings=True), 268_098_176),
    "LFM2-1.2B": (tf.Lfm2ForCausalLM, tf.Lfm2Config, dict(
        vocab_size=65536, hidden_size=2048, intermediate_size=12288, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, full_attn_idxs=[2, 5, 8, 10, 12, 14], conv_L_cache=3, conv_bias=False,
        block_multiple_of=256, block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True, norm_eps=1e-5,
        max_position_embeddings=128000, rope_theta=1000000.0, tie_word_embeddings=True), 1_170_340_608),
}
