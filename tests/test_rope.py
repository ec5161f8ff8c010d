"""Rotary scaling: runtime_common.rope's frequencies against transformers' own rope functions, and the imported
spec's per-layer rope values against the frequencies transformers' models hold.

  * per type (default, linear, dynamic, llama3, yarn with and without mscale / truncate, longrope short and long),
    two bases, three sequence lengths: inv_freq within 2 ulp of `ROPE_INIT_FUNCTIONS[type]`, attention factor equal;
  * per family config with a scaled rope (Llama-3.1, Gemma-3 4B-style linear on global layers only, Phi-3 longrope,
    Qwen2 yarn, Mistral dynamic, partial rotary): every compiled layer's (theta, rope_dim, rope_scaling) gives the
    inverse frequencies and attention scaling of that layer type in transformers' rotary module;
  * bad rope params are refused with the key named.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import compiler
from compiler.importers import spec_from_hf_config
from compiler.rope import RopeScaling, attention_factor, from_hf, resolve_scaling
from runtime_common.rope import inv_freq

LONG = dict(short_factor=[1.0 + 0.1 * i for i in range(16)], long_factor=[2.0 + 0.3 * i for i in range(16)])
TYPES = {
    "default": dict(rope_type="default"),
    "linear": dict(rope_type="linear", factor=8.0),
    "dynamic": dict(rope_type="dynamic", factor=4.0),
    "llama3": dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=64),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64),
    "yarn_mscale": dict(rope_type="yarn", factor=40.0, original_max_position_embeddings=64, mscale=0.707,
                        mscale_all_dim=1.0, beta_fast=16, beta_slow=2, truncate=False),
    "yarn_factorless": dict(rope_type="yarn", factor=None, original_max_position_embeddings=64),
    "longrope": dict(rope_type="longrope", original_max_position_embeddings=64, **LONG),
}


def ulps(a: list[float], b: np.ndarray) -> int:
    a32 = np.asarray(a, dtype=np.float32)
    assert (a32.astype(np.float64) == np.asarray(a)).all()                      # float32 values, exactly
    return int(np.abs(a32.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)).max())


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
@pytest.mark.parametrize("name", list(TYPES))
def test_inv_freq_matches_transformers(name, theta):
    rp = TYPES[name]
    cfg = tf.LlamaConfig(hidden_size=128, num_attention_heads=4, max_position_embeddings=256,
                         rope_parameters=dict(rp, rope_theta=theta))
    s, errors = resolve_scaling(from_hf(dict(rp), 256), 32)
    assert not errors
    for seq_len in (None, 60, 100, 1000):
        if name == "default":
            want = 1.0 / (theta ** (torch.arange(0, 32, 2, dtype=torch.int64).float() / 32))
            factor = 1.0
        else:
            want, factor = ROPE_INIT_FUNCTIONS[rp["rope_type"]](cfg, "cpu", seq_len=seq_len)
        got = inv_freq(theta, 32, s, seq_len)
        assert len(got) == 16
        assert ulps(got, want.numpy()) <= 2, (name, seq_len)
        assert attention_factor(s) == pytest.approx(factor, rel=1e-12)


def _equal(a: list[float], b: list[float]) -> bool:
    return a == b


def test_length_dependent_types_change_with_length():
    """dynamic grows the base past max_position_embeddings; longrope switches to the long factors."""
    dyn, _ = resolve_scaling(from_hf(TYPES["dynamic"], 256), 32)
    assert _equal(inv_freq(1e4, 32, dyn, 100), inv_freq(1e4, 32, dyn, 256))
    assert all(a < b for a, b in zip(inv_freq(1e4, 32, dyn, 1000)[1:], inv_freq(1e4, 32, dyn, 256)[1:]))
    lr, _ = resolve_scaling(from_hf(TYPES["longrope"], 256), 32)
    assert _equal(inv_freq(1e4, 32, lr, 64), inv_freq(1e4, 32, lr, None))
    assert not _equal(inv_freq(1e4, 32, lr, 65), inv_freq(1e4, 32, lr, 64))


@pytest.mark.parametrize("scaling, match", [
    (RopeScaling(rope_type="linear"), "needs factor"),
    (RopeScaling(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0), "original_max"),
    (RopeScaling(rope_type="yarn", original_max_position_embeddings=64), "needs factor, or max_position"),
    (RopeScaling(rope_type="longrope", original_max_position_embeddings=64, factor=2.0, short_factor=[1.0],
                 long_factor=[1.0]), "short_factor has 1 entries"),
])
def test_resolve_names_what_is_missing(scaling, match):
    _, errors = resolve_scaling(scaling, 32)
    assert errors and match in " ".join(m for _, m in errors)


def test_block_reports_bad_rope_scaling_at_its_path():
    spec = {"name": "t", "layers": [{"id": "lm", "type": "DecoderLM", "params": dict(
        family="llama", vocab_size=16, hidden=32, layers=1, heads=2, ff_dim=16,
        rope_scaling={"rope_type": "linear"})}]}
    c = compiler.compile(spec)
    assert not c.ok and "needs factor" in c.errors[0].message and "rope_scaling" in c.errors[0].render()


# family configs with scaled rope: (config class, model class, kwargs)
TINY = dict(vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_size=64, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
FAMILY_ROPE = {
    "llama3.1": (tf.LlamaConfig, tf.LlamaModel, dict(TINY, max_position_embeddings=1024, rope_theta=500000.0,
                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 128})),
    "gemma3-linear": (tf.Gemma3TextConfig, tf.Gemma3TextModel, dict(
        TINY, head_dim=16, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        rope_scaling={"rope_type": "linear", "factor": 8.0})),
    "phi3-longrope": (tf.Phi3Config, tf.Phi3Model, dict(
        TINY, max_position_embeddings=256, original_max_position_embeddings=64,
        rope_scaling={"type": "longrope", "short_factor": LONG["short_factor"][:8],
                      "long_factor": LONG["long_factor"][:8]})),
    "phi3-partial": (tf.Phi3Config, tf.Phi3Model, dict(TINY, partial_rotary_factor=0.5)),
    "qwen2-yarn": (tf.Qwen2Config, tf.Qwen2Model, dict(TINY, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256})),
    "mistral-dynamic": (tf.MistralConfig, tf.MistralModel, dict(TINY, max_position_embeddings=128, rope_scaling={
        "rope_type": "dynamic", "factor": 2.0})),
}


@pytest.mark.parametrize("name", list(FAMILY_ROPE))
def test_imported_layers_have_transformers_frequencies(name):
    C, M, kw = FAMILY_ROPE[name]
    cfg = C(**kw)
    hf = M(cfg)
    rot = hf.rotary_emb
    c = compiler.compile(spec_from_hf_config(cfg.to_dict()))
    assert c.ok, [d.render() for d in c.errors]
    blocks = [n for n in c.graph.nodes() if n.op == "TransformerBlock"]
    assert len(blocks) == cfg.num_hidden_layers
    for n in blocks:
        p = n.params
        if hasattr(rot, "layer_types"):                       # Gemma-3: one set per layer type
            want = getattr(rot, f"{p.layer_type}_inv_freq")
            scale = getattr(rot, f"{p.layer_type}_attention_scaling")
        else:
            want, scale = rot.inv_freq, rot.attention_scaling
        got = inv_freq(p.theta, p.rope_dim, p.rope_scaling)
        assert ulps(got, want.numpy()) <= 2, n.name
        assert attention_factor(p.rope_scaling) == pytest.approx(scale, rel=1e-12)
    if name == "gemma3-linear":
        assert [n.params.rope_scaling and n.params.rope_scaling.rope_type for n in blocks] == [None, "linear"]
