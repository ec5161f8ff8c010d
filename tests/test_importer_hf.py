"""compiler.importers.hf: config.json -> spec, the key maps, DecoderLM presets and GQA_MoE_Layer accounting.

Torch-free except where a transformers config class is the reference for the defaults.
"""
from __future__ import annotations

import json

import pytest
import transformers as tf

import compiler
import compiler.cost
from compiler.importers import hf_key_map, import_hf, spec_from_hf_config
from tests.hf_models import FULL, TINY

# SmolLM2-135M's config.json as published (transformers 4.40 era: rope_theta, rope_scaling null)
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 0,
    "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536, "is_llama_config": True, "max_position_embeddings": 8192, "model_type": "llama",
    "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None, "rope_theta": 100000,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": True,
    "vocab_size": 49152}


def lm_params(spec: dict) -> dict:
    (layer,) = spec["layers"]
    assert layer["id"] == "lm" and layer["type"] == "DecoderLM"
    return layer["params"]


def test_published_config_counts_exactly():
    c = compiler.compile(spec_from_hf_config(SMOLLM2_135M))
    assert c.ok and c.report["params"]["total"] == 134_515_008
    assert not [d for d in c.diagnostics if d.severity != "note"]


@pytest.mark.parametrize("family", list(TINY))
def test_defaults_table_agrees_with_transformers(family):
    """A config.json holding only some keys imports as transformers' config class fills it in."""
    _, C, kw, _ = TINY[family]
    cfg = C(**kw)
    sparse = dict(kw, model_type=cfg.model_type)
    assert lm_params(spec_from_hf_config(sparse)) == lm_params(spec_from_hf_config(cfg.to_dict()))


def test_gemma3_multimodal_config_imports_its_text_model():
    text = FULL["Gemma-3-270m"][2]
    full = tf.Gemma3Config(text_config=dict(text)).to_dict()
    assert lm_params(spec_from_hf_config(full)) == \
        lm_params(spec_from_hf_config(tf.Gemma3TextConfig(**text).to_dict()))
    from runtime_common.weights import map_names
    renamed, _ = map_names(["model.language_model.layers.0.mlp.up_proj.weight", "model.vision_tower.x.weight",
                            "model.multi_modal_projector.y", "lm_head.weight"], hf_key_map("gemma3"))
    assert renamed == {"lm.model.layers.0.mlp.up_proj.weight": "model.language_model.layers.0.mlp.up_proj.weight",
                       "lm.lm_head.weight": "lm_head.weight"}


def test_lfm2_legacy_spellings():
    cfg = dict(model_type="lfm2", vocab_size=32, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
               num_key_value_heads=1, block_ff_dim=48, block_multiple_of=8, full_attn_idxs=[1, 3],
               tie_embedding=False)
    p = lm_params(spec_from_hf_config(cfg))
    assert p["layer_types"] == ["conv", "full_attention", "conv", "full_attention"]
    assert p["ff_dim"] == 32 and p["tie"] is False           # int(2 * 48 / 3) = 32, a multiple of 8


@pytest.mark.parametrize("cfg, match", [
    (dict(SMOLLM2_135M, rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling.low_freq_factor"),
    (dict(SMOLLM2_135M, rope_scaling={"rope_type": "proportional", "factor": 8.0}), "rope type 'proportional'"),
    (dict(SMOLLM2_135M, rope_scaling={"rope_type": "linear", "factor": 8.0, "fudge": 1}), "fudge"),
    (dict(model_type="phi3", rope_scaling={"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}),
     "short_factor has 1 entries"),
    (dict(model_type="gemma3_text", use_bidirectional_attention=True), "use_bidirectional_attention"),
    (dict(model_type="qwen2_moe", num_experts=0), "num_experts"),
    (dict(model_type="qwen3_moe", decoder_sparse_step=0), "decoder_sparse_step"),
    (dict(model_type="deepseek_v3", num_key_value_heads=8), "num_key_value_heads"),
    (dict(model_type="llama", hidden_act="gelu_new_python"), "hidden_act"),
    (dict(model_type="bert"), "unsupported model_type"),
])
def test_refusals_name_the_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        spec_from_hf_config(cfg)


def test_import_hf_writes_a_spec(tmp_path):
    src, out = tmp_path / "config.json", tmp_path / "spec.json"
    src.write_text(json.dumps(SMOLLM2_135M))
    spec = import_hf(str(src), str(out))
    assert json.loads(out.read_text()) == spec
    assert compiler.compile(str(out)).report["params"]["total"] == 134_515_008


# --- DecoderLM presets ------------------------------------------------------------------------------------------------
def _graph_params(spec: dict) -> dict:
    c = compiler.compile(spec)
    assert c.ok, [d.message for d in c.errors]
    return {n.name: n.params for n in c.graph.nodes()}


@pytest.mark.parametrize("name, short", [
    ("Gemma-3-270m", dict(family="gemma3", vocab_size=262144, hidden=640, layers=18, heads=4, kv_heads=1,
                          ff_dim=2048, sliding_window=512)),
    ("LFM2-1.2B", dict(family="lfm2", vocab_size=65536, hidden=2048, layers=16, heads=32, kv_heads=8, ff_dim=8192,
                       layer_types=["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)])),
])
def test_presets_give_the_imported_model(name, short):
    """Written with the family presets only, the spec is the imported one, node for node."""
    _, C, kw, _ = FULL[name]
    imported = spec_from_hf_config(C(**kw).to_dict())
    written = dict(imported, layers=[{"id": "lm", "type": "DecoderLM", "params": short}])
    assert _graph_params(written) == _graph_params(imported)


def test_decoder_lm_node_names():
    spec = {"name": "t", "layers": [{"id": "lm", "type": "DecoderLM", "params": dict(
        family="nanovlm_lm", vocab_size=16, hidden=8, layers=2, heads=2, ff_dim=16)}]}
    c = compiler.compile(spec)
    assert [n.name for n in c.graph.nodes() if n.op != "Input"] == \
        ["lm.token_embedding", "lm.blocks.0", "lm.blocks.1", "lm.norm", "lm.head"]
    assert c.graph["lm.head"].params.tied_name == "lm.token_embedding.weight"


def test_decoder_lm_checks():
    bad = {"name": "t", "layers": [{"id": "lm", "type": "DecoderLM", "params": dict(
        vocab_size=16, hidden=8, layers=2, heads=2, ff_dim=16, top_k=2)}]}
    c = compiler.compile(bad)
    assert not c.ok and "num_experts" in c.errors[0].message


# --- GQA_MoE_Layer ----------------------------------------------------------------------------------------------------
SEED_MOE = {"type": "TransformerBlock", "params": {"type": "GQA_MoE_Layer", "repeat": 24, "num_experts": 16,
                                                   "top_k": 2, "hidden_dim": 2048, "num_heads": 32,
                                                   "num_kv_heads": 8, "rope_dim": 64}}


def _moe_spec(**over) -> dict:
    layer = {**SEED_MOE, "params": {**SEED_MOE["params"], **over}}
    return {"name": "moe", "inputs": [{"name": "x", "kind": "tokens", "shape": ["B", "T", 2048]}], "layers": [layer]}


def test_seed_moe_warns_the_expert_width():
    c = compiler.compile(_moe_spec())
    assert c.ok
    (w,) = [d for d in c.diagnostics if "expert_dim" in d.message]
    assert w.severity == "warning" and "using 2048" in w.message and "768" in w.hint


def test_seed_moe_claims_hold_for_768():
    rep = compiler.compile(_moe_spec(expert_dim=768)).report["params"]
    assert 475e6 < rep["active"] < 485e6                      # "480M active parameters per token"
    attn = 2 * 2048 * 2048 + 2 * 512 * 2048
    per_layer = attn + 2 * 2048 + 16 * 2048 + 16 * 3 * 2048 * 768
    assert rep["total"] == 24 * per_layer


def test_moe_active_params_and_flops():
    D, E, k, Fw, S = 16, 4, 2, 8, 12
    spec = {"name": "m", "inputs": [{"name": "x", "kind": "tokens", "shape": ["B", "T", D]}], "layers": [
        {"type": "GQA_MoE_Layer", "params": dict(num_experts=E, top_k=k, num_heads=2, expert_dim=Fw,
                                                 shared_expert_dim=S, names="qwen2_moe")}]}
    c = compiler.compile(spec, batch=1, context=10, with_nodes=True)
    (node,) = [n for n in c.report["nodes"] if n["op"] == "GQA_MoE_Layer"]
    experts = E * 3 * D * Fw
    assert node["params"] - node["active"] == experts * (E - k) // E
    attn_proj = 4 * D * D
    ffn = D * E + k * 3 * D * Fw + 3 * D * S + D           # router, top_k experts, shared expert and its gate
    assert node["flops_decode"] == 2 * (attn_proj + ffn) + 4 * 10 * D   # one token over the context (10 keys)
    names = set(compiler.cost.node_weights(c.graph[node["name"]]))
    want = ("mlp.gate.weight", "mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.shared_expert.up_proj.weight",
            "mlp.shared_expert_gate.weight")
    assert {f"{node['name']}.{k}" for k in want} <= names


def test_gemma3_4b_multimodal_config_scales_the_global_layers_only():
    """Gemma-3 4B's config.json layout (Gemma3ForConditionalGeneration): linear rope scaling in text_config applies
    to the full-attention layers; the sliding ones keep their own base, unscaled."""
    text = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1,
                head_dim=32, sliding_window=8, rope_scaling={"factor": 8.0, "rope_type": "linear"})
    p = lm_params(spec_from_hf_config(tf.Gemma3Config(text_config=text).to_dict()))
    assert p["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}
    assert p["rope_scaling_local"] == {"rope_type": "default"}
    assert (p["rope_theta"], p["rope_theta_local"]) == (1e6, 1e4)
    blocks = [n.params for n in compiler.compile(spec_from_hf_config({"model_type": "gemma3", "text_config": text}))
              .graph.nodes() if n.op == "TransformerBlock"]
    assert [(b.layer_type, b.theta, b.rope_scaling and b.rope_scaling.factor) for b in blocks] == \
        [("sliding_attention", 1e4, None)] * 5 + [("full_attention", 1e6, 8.0)]
