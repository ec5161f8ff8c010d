"""Dense decoder families and rope scalings against transformers 5.x, in torch and MLX.

For each case (llama with biases, gemma3, lfm2, qwen2 with sliding layers, qwen3, mistral, gemma2 with both soft-caps,
phi3 with fused projections and longrope past its original context, phi3 with partial rotary, smollm3 with NoPE
layers, olmo2, Llama-3.x `llama3`, Llama yarn / dynamic, a relu2 MLP, Gemma-3 4B-style `linear` on the global layers
only) a tiny transformers model (eager attention, the exact path; weights perturbed so every tensor matters) is
written with `save_pretrained`; its config.json is imported, the spec built in each runtime, model.safetensors loaded
through `hf_key_map` strictly, and the fp32 logits compared (atol 1e-4 x max(1, |logits|)). Greedy generation equals
transformers' token for token for every case, in both runtimes (the rope-scaled ones cross their original context).
Full-size counts of one published config per family: tests/test_parity_lm.py's FULL.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch
import transformers as tf
from safetensors import safe_open

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config
from runtime_mlx import generate as mlx_generate
from runtime_torch.generate import generate as torch_generate

V = 128
BASE = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
SHORT = [1.0 + 0.25 * i for i in range(8)]
LONG = [1.5 + 0.5 * i for i in range(8)]

# case: (model class, config class, config kwargs)
CASES = {
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


def tolerance(want: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(want).max()))


def hf_model(case: str, seed: int = 0):
    M, C, kw = CASES[case]
    torch.manual_seed(seed)
    m = M(C(**kw, attn_implementation="eager")).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.25)
            else:
                p.add_(0.1 * torch.randn_like(p))       # norms away from their init (ones / zeros)
    return m


@pytest.fixture(scope="module", params=list(CASES))
def saved(request, tmp_path_factory):
    """(case, transformers model, the folder save_pretrained wrote, its tensors, the compiled imported spec)."""
    case = request.param
    hf = hf_model(case)
    d = tmp_path_factory.mktemp(case)
    hf.save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    with safe_open(str(d / "model.safetensors"), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    c = compiler.compile(spec_from_hf_config(config))
    assert c.ok, "\n".join(e.render() for e in c.errors)
    return case, hf, config, tensors, c


def torch_model(saved):
    _, _, config, tensors, c = saved
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, {k: torch.from_numpy(v) for k, v in tensors.items()},
                              hf_key_map(config["model_type"]), strict=True)
    return model.eval()


def mlx_model(saved):
    _, _, config, tensors, c = saved
    model = runtime_mlx.build(c, init=False)
    runtime_mlx.load_state_dict_mapped(model, {k: mx.array(v) for k, v in tensors.items()},
                                       hf_key_map(config["model_type"]), strict=True)
    return model


IDS = torch.randint(3, V, (2, 21), generator=torch.Generator().manual_seed(1))   # past windows and original contexts


def logits(saved, runtime: str) -> np.ndarray:
    if runtime == "transformers":
        with torch.no_grad():
            return saved[1](input_ids=IDS).logits.numpy()
    if runtime == "torch":
        with torch.no_grad():
            return torch_model(saved)(input_ids=IDS)["lm.lm_head"].numpy()
    return np.array(mlx_model(saved)(input_ids=mx.array(IDS.numpy()))["lm.lm_head"])


@pytest.mark.parametrize("runtime", ["torch", "MLX"])
def test_logits_match_transformers(saved, runtime):
    want, got = logits(saved, "transformers"), logits(saved, runtime)
    diff = float(np.abs(got - want).max())
    print(f"{saved[0]}: {runtime} max |logits diff| = {diff:.2e} (logits up to {np.abs(want).max():.1f})")
    assert diff <= tolerance(want)


PROMPT, NEW = 6, 14


def test_greedy_generate_equals_transformers(saved):
    case, hf = saved[:2]
    ids = IDS[:1, :PROMPT]
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1, max_new_tokens=NEW,
                       eos_token_id=None, pad_token_id=0).tolist()
    got_t = torch_generate(torch_model(saved), ids, NEW).tolist()
    got_m = np.array(mlx_generate.generate(mlx_model(saved), ids.numpy(), NEW)).tolist()
    assert got_t == want, case
    assert got_m == want, case
    assert len(set(want[0][PROMPT:])) > 2, "degenerate test: the model repeats one token"


@pytest.mark.parametrize("case", list(CASES))
def test_defaults_table_agrees_with_transformers(case):
    """A config.json holding only some keys (legacy spellings included) imports as transformers' config class fills
    it in and writes it back (compiler/importers/hf.py's DEFAULTS and rope reading)."""
    _, C, kw = CASES[case]
    full = C(**kw).to_dict()
    sparse = dict(kw, model_type=full["model_type"])
    assert spec_from_hf_config(sparse)["layers"] == spec_from_hf_config(full)["layers"]
