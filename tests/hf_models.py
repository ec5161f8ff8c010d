"""Tiny and full-size transformers language models shared by the tests (parity, generation, packing, the importer):
the reference models and their import into omnic; the hub's per-expert layout, perturbed models, SigLIP2's
patchify. A helper module, not a test module: tests import it, never each
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
from runtime_common import checkpoint as ckpt

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


# --- tiny dense decoders from save_pretrained files (test_parity_dense.py) ------------------------------------------
V = 128
BASE = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
SHORT = [1.0 + 0.25 * i for i in range(8)]
LONG = [1.5 + 0.5 * i for i in range(8)]

# dense families and rope scalings (tests/test_parity_dense.py): case -> (model class, config class, config kwargs)
DENSE = {
    "llama": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(BASE, attention_bias=True, mlp_bias=True)),
    "gemma3": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig, dict(
        BASE, num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
    "lfm2": (tf.Lfm2ForCausalLM, tf.Lfm2Config, dict(
        BASE, num_hidden_layers=4, layer_types=["conv", "full_attention", "conv", "full_attention"], conv_L_cache=3,
        block_multiple_of=16)),
    "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config, dict(
        BASE, num_hidden_layers=3, use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "qwen3": (tf.Qwen3ForCausalLM, tf.Qwen3Config, dict(BASE, head_dim=16, attention_bias=True)),
    "mistral": (tf.MistralForCausalLM, tf.MistralConfig, dict(BASE, sliding_window=4)),
    "gemma2": (tf.Gemma2ForCausalLM, tf.Gemma2Config, dict(
        BASE, num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        attn_logit_softcapping=1.5, final_logit_softcapping=4.0)),
    "phi3-longrope": (tf.Phi3ForCausalLM, tf.Phi3Config, dict(
        BASE, max_position_embeddings=64, original_max_position_embeddings=8,
        rope_scaling={"type": "longrope", "short_factor": SHORT, "long_factor": LONG})),
    "phi3-partial": (tf.Phi3ForCausalLM, tf.Phi3Config, dict(BASE, partial_rotary_factor=0.5, sliding_window=5)),
    "smollm3": (tf.SmolLM3ForCausalLM, tf.SmolLM3Config, dict(BASE, num_hidden_layers=4, tie_word_embeddings=True)),
    "olmo2": (tf.Olmo2ForCausalLM, tf.Olmo2Config, dict(BASE)),
    "llama3": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        BASE, max_position_embeddings=128, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8})),
    "llama-yarn": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        BASE, max_position_embeddings=64, rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                        "original_max_position_embeddings": 16})),
    "llama-dynamic": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        BASE, max_position_embeddings=8, rope_scaling={"rope_type": "dynamic", "factor": 2.0})),
    "llama-relu2": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(BASE, hidden_act="relu2")),
    "gemma3-linear": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig, dict(
        BASE, num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_scaling={"rope_type": "linear", "factor": 8.0}, final_logit_softcapping=6.0)),
}


# --- full-size configurations (backbones.md, and one published config per imported family): config kwargs and the
# parameter count ----------------------------------
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
    # one published config per family (values as in the models' config.json)

    "Qwen2.5-0.5B": (tf.Qwen2ForCausalLM, tf.Qwen2Config, dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        sliding_window=32768, max_window_layers=24, use_sliding_window=False, tie_word_embeddings=True),
        494_032_768),
    "Qwen3-0.6B": (tf.Qwen3ForCausalLM, tf.Qwen3Config, dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
        rms_norm_eps=1e-6, attention_bias=False, use_sliding_window=False, max_window_layers=28,
        tie_word_embeddings=True), 596_049_920),
    "Mistral-7B-v0.1": (tf.MistralForCausalLM, tf.MistralConfig, dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=32768, rope_theta=10000.0, rms_norm_eps=1e-5,
        sliding_window=4096, tie_word_embeddings=False), 7_241_732_096),
    "gemma-2-2b": (tf.Gemma2ForCausalLM, tf.Gemma2Config, dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
        max_position_embeddings=8192, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, rope_theta=10000.0), 2_614_341_888),
    "Phi-3-mini-4k": (tf.Phi3ForCausalLM, tf.Phi3Config, dict(
        vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, original_max_position_embeddings=4096,
        sliding_window=2047, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False), 3_821_079_552),
    "SmolLM3-3B": (tf.SmolLM3ForCausalLM, tf.SmolLM3Config, dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
        num_key_value_heads=4, max_position_embeddings=65536, rope_theta=5000000.0, rms_norm_eps=1e-6,
        no_rope_layer_interval=4, tie_word_embeddings=True), 3_075_098_624),
    "OLMo-2-1124-7B": (tf.Olmo2ForCausalLM, tf.Olmo2Config, dict(
        vocab_size=100352, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, rope_theta=500000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False), 7_298_617_344),
    "Llama-3.2-1B": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        tie_word_embeddings=True), 1_235_814_400),
    "gemma-3-4b (text)": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig, dict(
        vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
        sliding_window_pattern=6, max_position_embeddings=131072, rope_theta=1000000.0,
        rope_local_base_freq=10000.0, rope_scaling={"factor": 8.0, "rope_type": "linear"}, rms_norm_eps=1e-6),
        3_880_263_168),
    "Mixtral-8x7B-v0.1": (tf.MixtralForCausalLM, tf.MixtralConfig, dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=32768,
        rope_theta=1e6, rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False), 46_702_792_704),
}


def plan_names(shapes: dict, key_map, model_shapes: dict | None = None) -> dict:
    """{model name: shape} that the checkpoint loader's plan makes of checkpoint tensors {name: shape}."""
    refs = {k: ckpt.Ref(k, shape, "F32") for k, shape in shapes.items()}
    planned, problems = ckpt.plan(refs, key_map, model_shapes or {})
    assert not problems, problems
    return {k: tuple(src.shape) for k, src in planned.items()}


def hub_layout(state: dict, model_type: str) -> dict:
    """transformers' stacked experts split back into the per-expert tensors of hub checkpoints."""
    parts = {"mixtral": ("block_sparse_moe", "w1", "w3", "w2"),
             "qwen2_moe": ("mlp", "gate_proj", "up_proj", "down_proj")}[model_type]
    mod, gate, up, down = parts
    out = {}
    for k, t in state.items():
        if k.endswith(".mlp.experts.gate_up_proj"):
            base = k[:-len(".mlp.experts.gate_up_proj")] + f".{mod}.experts"
            g, u = t.chunk(2, dim=1)
            for e in range(t.shape[0]):
                out[f"{base}.{e}.{gate}.weight"], out[f"{base}.{e}.{up}.weight"] = g[e].clone(), u[e].clone()
        elif k.endswith(".mlp.experts.down_proj"):
            base = k[:-len(".mlp.experts.down_proj")] + f".{mod}.experts"
            for e in range(t.shape[0]):
                out[f"{base}.{e}.{down}.weight"] = t[e].clone()
        else:
            out[k.replace(".mlp.gate.", f".{mod}.gate.")] = t
    return out


def perturbed(cls, cfg, seed: int = 0):
    """transformers model `cls(cfg)` in eval mode, every parameter moved by 0.1 N(0, 1) from `seed + 1`."""
    torch.manual_seed(seed)
    m = cls(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


def patchify(img: torch.Tensor, P: int) -> torch.Tensor:
    """SigLIP2's processor layout: (B, C, H, W) -> (B, h*w, P*P*C), patches row-major, each flattened (py, px, c)."""
    B, C, H, W = img.shape
    x = img.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // P) * (W // P), P * P * C)
