"""Mixture-of-experts families against transformers 5.x: mixed dense/MoE stacks (Qwen2-MoE, Qwen3-MoE with
decoder_sparse_step and mlp_only_layers), qwen3_moe, deepseek_v3 (multi-head latent attention, group-limited sigmoid
routing, dense first layers, the latent KV cache).

  * full size: transformers' meta-device parameter count of a published config == the compiler's report of the
    imported spec == omnic's torch model on the meta device; transformers' state-dict names (key map applied) and
    shapes == omnic's; the active count per token stated in the test;
  * tiny configs: `save_pretrained` files load strictly (torch and MLX) and give transformers' fp32 logits within
    1e-4; the per-layer feed-forward kinds equal transformers' module classes;
  * deepseek_v3 decoding: step-by-step logits equal the full forward, greedy tokens equal transformers' `generate`,
    and the cache holds the latent: its bytes equal the compiler's decode state and transformers' own cache tensors.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import transformers as tf
from safetensors import safe_open

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config
from tests.hf_models import plan_names
from tests.hf_moe_models import IDS, TINY, hf_model

warnings.filterwarnings("ignore", message=".*causal_conv1d.*")

# --- published configs (config.json values as on the hub; keys the count does not depend on left out) ---------------
QWEN15_MOE_A27B = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
    shared_expert_intermediate_size=5632, num_experts=60, num_experts_per_tok=4, num_hidden_layers=24,
    num_attention_heads=16, num_key_value_heads=16, decoder_sparse_step=1, norm_topk_prob=False,
    max_position_embeddings=8192, rope_theta=1e6, tie_word_embeddings=False, rms_norm_eps=1e-6,
    sliding_window=32768, use_sliding_window=False, max_window_layers=21)
QWEN3_30B_A3B = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=48,
    num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
    norm_topk_prob=True, rope_theta=1e6, max_position_embeddings=40960, tie_word_embeddings=False, rms_norm_eps=1e-6,
    decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False, sliding_window=None, max_window_layers=48)
DEEPSEEK_V3 = dict(
    vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
    num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1, n_routed_experts=256,
    routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128,
    qk_nope_head_dim=128, n_group=8, topk_group=4, num_experts_per_tok=8, first_k_dense_replace=3,
    norm_topk_prob=True, max_position_embeddings=163840, rms_norm_eps=1e-6, rope_theta=10000.0,
    rope_scaling={"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                  "original_max_position_embeddings": 4096, "type": "yarn"}, tie_word_embeddings=False)

# name: (model class, config class, config, total parameters, active parameters per token)
FULL = {
    "Qwen1.5-MoE-A2.7B": (tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig, QWEN15_MOE_A27B, 14_315_784_192, 2_689_173_504),
    "Qwen3-30B-A3B": (tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig, QWEN3_30B_A3B, 30_532_122_624, 3_353_032_704),
    "DeepSeek-V3": (tf.DeepseekV3ForCausalLM, tf.DeepseekV3Config, DEEPSEEK_V3, 671_026_404_352, 37_552_282_624),
}


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_counts_agree(name):
    M, C, kw, total, active = FULL[name]
    cfg = C(**kw)
    with torch.device("meta"):
        hf = M(cfg)
    c = compiler.compile(spec_from_hf_config(cfg.to_dict()))
    assert c.ok, "\n".join(d.render() for d in c.errors)
    assert sum(p.numel() for p in hf.parameters()) == total
    assert c.report["params"]["total"] == total
    assert round(c.report["params"]["active"]) == active
    ours = rt.build(c, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == total
    # every tensor transformers holds (persistent buffers included) at the same name and shape, through the key map
    # as the checkpoint loader plans it
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    planned = plan_names({k: tuple(v.shape) for k, v in hf.state_dict().items()}, hf_key_map(cfg.model_type), mine)
    assert planned == mine


@pytest.fixture(scope="module", params=list(TINY))
def saved(request, tmp_path_factory):
    """(name, transformers model, folder written by its save_pretrained)."""
    hf = hf_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return request.param, hf, path


def load_torch(path):
    import json
    cfg = json.loads((path / "config.json").read_text())
    c = compiler.compile(spec_from_hf_config(cfg))
    assert c.ok, "\n".join(d.render() for d in c.errors)
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        assert any(".experts.0." in k for k in f.keys())     # save_pretrained writes one tensor per expert
    model = rt.build(c, init=False)
    rt.load_checkpoint(model, path, hf_key_map(cfg["model_type"]))      # strict; the key map's Merge rules stack them
    return c, model.eval()





def test_ffn_kinds_are_transformers(saved):
    """The imported per-layer pattern gives the layers transformers built: experts where it has a sparse block."""
    name, hf, path = saved
    c, _ = load_torch(path)
    kinds = [n.params.ffn_type for n in c.graph.nodes() if n.op in ("GQA_MoE_Layer", "MLA_Layer")]
    theirs = ["moe" if hasattr(layer.mlp, "experts") else "dense" for layer in hf.model.layers]
    assert kinds == theirs
    if name.endswith("mixed") or name == "deepseek_v3":
        assert set(kinds) == {"moe", "dense"}


def test_torch_logits_match_transformers(saved):
    name, hf, path = saved
    _, model = load_torch(path)
    with torch.no_grad():
        want = hf(input_ids=IDS).logits
        got = model(input_ids=IDS)["lm.lm_head"]
    diff = (got - want).abs().max().item()
    print(f"{name}: max |logits diff| = {diff:.2e} (logits up to {want.abs().max().item():.1f})")
    assert diff < 1e-4


# --- deepseek_v3 decoding with the latent cache -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["deepseek_v3", "deepseek_v3_plain_q"])
def test_mla_stepwise_decode_equals_full_forward_and_transformers_generate(name, tmp_path):
    from runtime_torch.generate import DecodeSession, generate
    hf = hf_model(name)
    hf.save_pretrained(tmp_path)
    _, model = load_torch(tmp_path)
    with torch.no_grad():
        full = model(input_ids=IDS)["lm.lm_head"]                            # (B, T, V)
    session = DecodeSession(model, pack=False)
    steps = [session.step(IDS[:, :4])] + [session.step(IDS[:, t:t + 1]) for t in range(4, IDS.shape[1])]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-4
    want = hf.generate(IDS, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert torch.equal(generate(model, IDS, 8), want)


@pytest.mark.parametrize("batch, context", [(1, 7), (2, 5)])
def test_latent_cache_bytes_equal_the_report_and_transformers_cache(batch, context, tmp_path):
    """After a prefill, the runtime's caches hold kv_lora_rank + qk_rope_head_dim elements per token and layer:
    exactly the compiler's decode state, and exactly what transformers' own cache holds for this model."""
    from runtime_torch.generate import DecodeSession
    hf = hf_model("deepseek_v3")
    hf.save_pretrained(tmp_path)
    _, model = load_torch(tmp_path)
    ids = IDS[:batch, :context]
    session = DecodeSession(model, pack=False)
    session.step(ids)
    ours = sum(t.numel() * t.element_size() for cache in session.caches.values() for t in (cache.k, cache.v))
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=batch, context=context,
                              format="fp32").report
    assert ours == report["memory"]["decode_state"]["fp32"]
    cfg = hf.config
    assert ours == 4 * batch * context * cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    with torch.no_grad():
        past = hf(input_ids=ids, use_cache=True).past_key_values
    theirs = sum(t.numel() * t.element_size() for layer in past.layers for t in (layer.keys, layer.values))
    assert ours == theirs


# --- bad input: one located error per root cause ----------------------------------------------------------------------
_DSV3 = dict(family="deepseek_v3", vocab_size=64, hidden=32, layers=2, heads=4, ff_dim=64, num_experts=8, top_k=2,
             expert_dim=16, shared_expert_dim=16, n_group=4, topk_group=2, routed_scaling_factor=2.5,
             ffn_types=["dense", "moe"], q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=10, qk_rope_head_dim=8,
             v_head_dim=12)


@pytest.mark.parametrize("change, field, words", [
    (dict(ffn_types=["dense"]), "ffn_types", "1 entries for 2 layers"),
    (dict(ff_dim=None), "ff_dim", "dense layers"),
    (dict(ffn_types=None), "ff_dim", "without dense layers"),
    (dict(n_group=3), "n_group", "does not divide"),
    (dict(topk_group=5), "topk_group", "exceeds n_group"),
    (dict(top_k=7), "top_k", "4 experts of the 2 kept groups"),
    (dict(top_k=9), "top_k", "exceeds num_experts"),
    (dict(qk_rope_head_dim=7), "qk_rope_head_dim", "even"),
    (dict(v_head_dim=None), "v_head_dim", "needs v_head_dim"),
])
def test_bad_moe_and_mla_params_give_one_located_error(change, field, words):
    params = {k: v for k, v in {**_DSV3, **change}.items() if v is not None}
    c = compiler.compile({"name": "t", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
                          "layers": [{"id": "lm", "type": "DecoderLM", "params": params}]})
    (err,) = c.errors
    assert err.render().startswith(f"error: layers[0].params.{field}:") and words in err.render()


def test_no_layer_with_experts_is_refused():
    with pytest.raises(ValueError, match="no layer has experts"):
        spec_from_hf_config(dict(model_type="qwen3_moe", num_hidden_layers=2, mlp_only_layers=[0, 1]))


def test_deepseek_v3_key_map_drops_the_prediction_layer_as_transformers():
    """Hub DeepSeek-V3 files hold the multi-token-prediction layer model.layers.61, which transformers skips."""
    names = ["model.layers.61.eh_proj.weight", "model.layers.61.mlp.experts.0.down_proj.weight",
             "model.layers.60.mlp.gate.weight", "lm_head.weight"]
    assert plan_names({k: (2, 2) for k in names}, hf_key_map("deepseek_v3")) == {
        "lm.model.layers.60.mlp.gate.weight": (2, 2), "lm.lm_head.weight": (2, 2)}
