"""Language models against transformers 5.x: logits of tiny random models, and full-size parameter counts.

For each family (Llama / SmolLM2, Gemma-3 with sliding + global layers over a sequence longer than the window,
LFM2 with conv + attention layers, Qwen2-MoE with a shared expert, Mixtral) a transformers model is built from a
tiny config with a fixed seed (eager attention and experts, the exact reference paths), its weights perturbed so
that every tensor matters, saved with safetensors; its config is imported to a spec, the spec built as an omnic
torch model, the file loaded through `hf_key_map` (strict), and the logits compared (fp32, atol 1e-4).
Counts: transformers on the meta device == backbones.md == the compiler's report of the imported spec == omnic's
torch model on the meta device.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config
from tests.hf_models import FULL, TINY, hf_model, hub_layout, omnic_from_hf, plan_names
from runtime_torch.ops.moe import experts, route

warnings.filterwarnings("ignore", message=".*causal_conv1d.*")

@pytest.mark.parametrize("family", list(TINY))
def test_logits_match_transformers(family, tmp_path):
    hf = hf_model(family)
    model = omnic_from_hf(hf, tmp_path)
    ids = torch.randint(0, 128, (2, 11), generator=torch.Generator().manual_seed(1))   # 11 > Gemma's window 4
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        got = model(input_ids=ids)["lm.lm_head"]
    diff = (got - want).abs().max().item()
    print(f"{family}: max |logits diff| = {diff:.2e} (logits up to {want.abs().max().item():.1f})")
    assert diff < 1e-4


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral"])
def test_per_expert_hub_checkpoints_load(family):
    """The hub's files store one tensor per expert: the loader stacks them by the key map's Merge rules (strict), and
    a missing expert is named."""
    hf = hf_model(family)
    hub = hub_layout(hf.state_dict(), family)
    assert not any("gate_up_proj" in k for k in hub)
    c = compiler.compile(spec_from_hf_config(hf.config.to_dict()))
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, hub, hf_key_map(family), strict=True)
    ids = torch.randint(0, 128, (1, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (model(input_ids=ids)["lm.lm_head"] - hf(input_ids=ids).logits).abs().max().item() < 1e-4
    del hub[next(k for k in hub if ".experts.1." in k)]
    with pytest.raises(ValueError, match="lacks experts/parts 1"):
        rt.load_state_dict_mapped(rt.build(c, init=False), hub, hf_key_map(family), strict=True)


def test_moe_dispatch_paths_agree():
    """The grouped (torch._grouped_mm) and per-expert dispatch give the same result, also with idle experts."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(13, 16, generator=g)
    router = torch.randn(6, 16, generator=g)
    router[5] = -100.0                                   # expert 5 never chosen
    gate_up, down = torch.randn(6, 16, 16, generator=g), torch.randn(6, 16, 8, generator=g)
    w, idx = route(h, router, 2, True)
    assert torch.allclose(w.sum(-1), torch.ones(13))
    a = experts(h, idx, w, gate_up, down, torch.nn.functional.silu, grouped=True)
    b = experts(h, idx, w, gate_up, down, torch.nn.functional.silu, grouped=False)
    ref = torch.zeros_like(h)
    for t in range(13):
        for j in range(2):
            e = idx[t, j]
            gg, uu = (gate_up[e] @ h[t]).chunk(2)
            ref[t] += w[t, j] * (down[e] @ (torch.nn.functional.silu(gg) * uu))
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, ref, atol=1e-4)


# --- full-size parameter counts (backbones.md) ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FULL))
def test_full_size_counts_agree(name):
    M, C, kw, expected = FULL[name]
    cfg = C(**kw)
    with torch.device("meta"):
        hf_count = sum(p.numel() for p in M(cfg).parameters())
    c = compiler.compile(spec_from_hf_config(cfg.to_dict()))
    assert c.ok, "\n".join(d.render() for d in c.errors)
    omnic_meta = rt.build(c, device="meta")
    torch_count = sum(p.numel() for p in omnic_meta.parameters())
    assert hf_count == expected
    assert c.report["params"]["total"] == expected
    assert torch_count == expected


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_names_and_shapes(name):
    """transformers' state-dict keys, renamed by the key map, are omnic's keys with the same shapes."""
    M, C, kw, _ = FULL[name]
    cfg = C(**kw)
    with torch.device("meta"):
        hf = M(cfg)
    c = compiler.compile(spec_from_hf_config(cfg.to_dict()))
    ours = {k: tuple(v.shape) for k, v in rt.build(c, device="meta").state_dict().items()}
    # as the checkpoint loader plans it (renames, merges and splits of the family's key map)
    assert plan_names({k: tuple(v.shape) for k, v in hf.state_dict().items()}, hf_key_map(cfg.model_type), ours) == ours
