"""The mixture-of-experts families of tests/test_moe_families.py in the MLX runtime: transformers' `save_pretrained`
files (per-expert tensors, stacked by the key map's Merge rules without torch) load strictly and give transformers'
fp32 logits within 1e-4; deepseek_v3's latent cache decodes step by step to the full forward's logits, greedy tokens
equal transformers' `generate`, and its bytes equal the compiler's decode state.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch

import compiler
from compiler.importers import hf_key_map, spec_from_hf_config
from runtime_mlx import generate as mlx_generate
from tests.hf_moe_models import IDS, TINY, hf_model


@pytest.fixture(scope="module", params=list(TINY))
def saved(request, tmp_path_factory):
    hf = hf_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return request.param, hf, path


def load_mlx(path, batch: int = 1, context: int = 16):
    cfg = json.loads((path / "config.json").read_text())
    c = compiler.compile(spec_from_hf_config(cfg), batch=batch, context=context).raise_for_errors()
    m = runtime_mlx.build(c, init=False)
    runtime_mlx.load_checkpoint(m, path, hf_key_map(cfg["model_type"]))   # strict; per-expert files stacked, no torch
    return c, m


def test_mlx_logits_match_transformers(saved):
    name, hf, path = saved
    _, m = load_mlx(path)
    with torch.no_grad():
        want = hf(input_ids=IDS).logits.numpy()
    got = np.array(m(input_ids=mx.array(IDS.numpy()))["lm.lm_head"])
    diff = float(np.abs(got - want).max())
    print(f"{name}: max |logits diff| = {diff:.2e} (logits up to {np.abs(want).max():.1f})")
    assert diff < 1e-4


@pytest.mark.parametrize("name", ["deepseek_v3", "deepseek_v3_plain_q"])
def test_mla_decoding(name, tmp_path):
    hf = hf_model(name)
    hf.save_pretrained(tmp_path)
    _, m = load_mlx(tmp_path)
    ids = mx.array(IDS.numpy())
    full = np.array(m(input_ids=ids)["lm.lm_head"])
    session = mlx_generate.DecodeSession(m)
    steps = [session.step(ids[:, :4])] + [session.step(ids[:, t:t + 1]) for t in range(4, ids.shape[1])]
    assert float(np.abs(np.array(mx.concatenate(steps, axis=1)) - full).max()) < 1e-4
    want = hf.generate(IDS, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert np.array(mlx_generate.generate(m, ids, 8)).tolist() == want.tolist()


@pytest.mark.parametrize("batch, context", [(1, 7), (2, 5)])
def test_latent_cache_bytes_equal_the_report(batch, context, tmp_path):
    hf = hf_model("deepseek_v3")
    hf.save_pretrained(tmp_path)
    c, m = load_mlx(tmp_path, batch, context)
    session = mlx_generate.DecodeSession(m)
    session.step(mx.array(IDS[:batch, :context].numpy()))
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=batch, context=context,
                              format="fp32").report
    assert session.cache_nbytes() == report["memory"]["decode_state"]["fp32"]
