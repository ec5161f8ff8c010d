"""Decoding a Mamba-2 LM through its declared state (SSM state and convolution inputs): `generate` and the
step-by-step `DecodeSession` of both runtimes, against the full forward, transformers' generate, the torch runtime
(MLX) and the compiler's decode-state accounting (the bytes the caches really hold). The tiny model is
test_mamba2's, loaded from transformers' save_pretrained file.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler
from compiler.importers import spec_from_hf_config
from runtime_torch.generate import DecodeSession, generate
from tests.test_mamba2 import omnic_torch

PROMPT, NEW = 6, 14


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return omnic_torch(tmp_path_factory.mktemp("mamba2"))


def test_greedy_equals_transformers(pair):
    hf, model, _ = pair
    ids = torch.randint(3, 96, (2, PROMPT), generator=torch.Generator().manual_seed(2))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1, max_new_tokens=NEW,
                       eos_token_id=None, pad_token_id=0)
    got = generate(model, ids, NEW)
    assert got.tolist() == want.tolist()
    assert len(set(got[0, PROMPT:].tolist())) > 2, "degenerate test: the model repeats one token"


@pytest.mark.parametrize("parts", [(1,) * 11, (3, 1, 5, 2), (6, 5)])
def test_cached_steps_equal_the_full_forward(pair, parts):
    """Feeding the sequence token by token, or in chunks (which cross the scan's 5-token chunks), through the
    state gives the full forward's logits."""
    _, model, _ = pair
    ids = torch.randint(0, 96, (2, sum(parts)), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(input_ids=ids)["lm.lm_head"]
    s = DecodeSession(model)
    out, start = [], 0
    for n in parts:
        out.append(s.step(ids[:, start:start + n]))
        start += n
    assert s.seen == sum(parts)
    assert (torch.cat(out, dim=1) - full).abs().max().item() < 1e-4


def test_cache_bytes_equal_the_reports_decode_state(pair):
    """After a prefill of 5 and 4 decoded tokens at batch 2, the caches hold exactly the compiler's decode state
    (fp32): per layer (B, H, P, N) + (B, I + 2 G N, K - 1), independent of the length."""
    hf, model, _ = pair
    s = DecodeSession(model, reserve=9)
    s.step(torch.zeros(2, 5, dtype=torch.long))
    for _ in range(4):
        s.step(torch.zeros(2, 1, dtype=torch.long))
    held = sum(t.untyped_storage().nbytes() for c in s.caches.values() for t in c.tensors())
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=2, context=9).report
    assert held == report["memory"]["decode_state"]["fp32"]
    cfg = hf.config
    per_layer = 2 * (cfg.num_heads * cfg.head_dim * cfg.state_size
                     + (cfg.expand * cfg.hidden_size + 2 * cfg.n_groups * cfg.state_size) * (cfg.conv_kernel - 1))
    assert held == 4 * per_layer * cfg.num_hidden_layers


def test_decode_flops_match_torch_counter(pair):
    """The report's FLOPs per decoded token == torch's FlopCounterMode over one cached step (batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode
    hf, model, _ = pair
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=1, context=8).report
    s = DecodeSession(model, pack=False)
    s.step(torch.zeros(1, 7, dtype=torch.long))
    with FlopCounterMode(display=False) as fc:
        s.step(torch.zeros(1, 1, dtype=torch.long))
    assert fc.get_total_flops() == report["flops"]["decode_per_token"]


def test_mlx_generate_equals_torch_and_holds_the_declared_state(pair):
    import runtime_mlx  # first: the OpenBLAS preload precedes `import mlx`
    import mlx.core as mx
    from runtime_mlx import generate as mlx_generate
    from runtime_mlx import weights as mlx_weights
    from compiler.importers import hf_key_map
    hf, model, c = pair
    m = runtime_mlx.build(c, init=False)
    mlx_weights.load_state_dict_mapped(m, {k: mx.array(v.numpy()) for k, v in hf.state_dict().items()},
                                       hf_key_map("mamba2"))
    ids = torch.randint(3, 96, (2, PROMPT), generator=torch.Generator().manual_seed(2))
    ours = np.array(mlx_generate.generate(m, mx.array(ids.numpy()), NEW))
    assert ours.tolist() == generate(model, ids, NEW).tolist()
    s = mlx_generate.DecodeSession(m)
    mx.eval(s.step(mx.array(ids.numpy())))
    report = compiler.compile(spec_from_hf_config(hf.config.to_dict()), batch=2, context=PROMPT).report
    assert s.cache_nbytes() == report["memory"]["decode_state"]["fp32"]
