"""The fast decoding paths compute what the plain ones do: the one-token block step (runtime_torch/decode_step.py),
one-row products by torch.mv and the dtype rule of the packed layout (kernels.py, pack.py), and the MoE dispatch
(the per-expert loop and the few-pair path of ops/moe.py). Greedy tokens equal the plain path's and transformers'
generate; logits agree within the rounding of the dtype."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import runtime_torch as rt
from runtime_torch.decode_step import OneToken, one_token
from runtime_torch.generate import DecodeSession, generate
from runtime_torch.kernels import linear, linear_add
from runtime_torch.ops import moe
from tests.hf_models import hf_model, omnic_from_hf

NEW = 10


@pytest.fixture(scope="module", params=["llama", "mixtral", "qwen2_moe"])
def pair(request, tmp_path_factory):
    hf = hf_model(request.param)
    return hf, omnic_from_hf(hf, tmp_path_factory.mktemp(request.param))


def prompt(seed=0, shape=(1, 6)):
    return torch.randint(3, 128, shape, generator=torch.Generator().manual_seed(seed))


def steps(model, ids, seq, fast):
    """Logits of the prefill of `ids` and of each later token of `seq` fed one by one (teacher forcing)."""
    s = DecodeSession(model, reserve=ids.shape[1] + seq.shape[1], fast=fast)
    out = [s.step(ids, last=True)]
    out += [s.step(seq[:, t:t + 1]) for t in range(seq.shape[1])]
    return s, torch.cat(out, dim=1)


def test_fast_path_runs_and_equals_plain_path_fp32(pair):
    hf, model = pair
    ids, seq = prompt(), prompt(1, (1, NEW))
    s, fast = steps(model, ids, seq, True)
    assert all(isinstance(m, OneToken) for _, m, _, cached in s.decode if cached)
    _, plain = steps(model, ids, seq, False)
    assert (fast - plain).abs().max().item() < 1e-4
    got = generate(model, ids, NEW)
    assert torch.equal(got, generate(model, ids, NEW, fast=False))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1, max_new_tokens=NEW,
                       eos_token_id=None, pad_token_id=0)
    assert got.tolist() == want.tolist()


def test_fast_path_bf16(pair):
    """bf16 weights (row-major, pack.py's rule): the fast path's logits within bf16 rounding of the plain path's at
    every teacher-forced step, and for the dense model its greedy tokens equal to the plain path's (a MoE model's
    routing may flip between near-equal experts under bf16 rounding: addmv rounds once where the plain path rounds
    the product and the sum)."""
    hf, model = pair
    m = copy.deepcopy(model).to(torch.bfloat16)
    rt.pack(m)
    blk = next(b for b in m.modules() if getattr(b, "_groups", None))
    assert blk._groups["qkv"].wt.is_contiguous() and blk.q.weight.is_contiguous()     # row-major views
    ids, seq = prompt(), prompt(1, (1, NEW))
    _, fast = steps(m, ids, seq, True)
    _, plain = steps(m, ids, seq, False)
    assert fast.dtype == torch.bfloat16
    assert (fast.float() - plain.float()).abs().max().item() < 0.05 * plain.float().abs().max().item()
    if "moe" not in hf.config.model_type and hf.config.model_type != "mixtral":
        assert torch.equal(generate(m, ids, NEW), generate(m, ids, NEW, fast=False))


def test_batched_rows_and_cache_growth(pair):
    """Several rows per step (no torch.mv) and a cache that must grow past its reservation give the plain path's
    logits."""
    _, model = pair
    ids, seq = prompt(2, (3, 4)), prompt(3, (3, 6))
    a = DecodeSession(model, reserve=2)
    b = DecodeSession(model, fast=False)
    la = [a.step(ids)] + [a.step(seq[:, t:t + 1]) for t in range(6)]
    lb = [b.step(ids)] + [b.step(seq[:, t:t + 1]) for t in range(6)]
    assert (torch.cat(la, 1) - torch.cat(lb, 1)).abs().max().item() < 1e-4


def test_blocks_outside_the_fast_path_keep_their_forward():
    """Sliding windows, q/k norms and post norms (Gemma-3) are not covered: one_token gives None, and decoding
    uses the block's forward."""
    from tests.hf_models import omnic_from_hf as load
    import tempfile, pathlib
    hf = hf_model("gemma3")
    with tempfile.TemporaryDirectory() as d:
        model = load(hf, pathlib.Path(d))
    s = DecodeSession(model)
    blocks = [m for _, m, _, cached in s.decode if cached]
    assert blocks and all(not isinstance(m, OneToken) and one_token(m) is None for m in blocks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["row", "col"])
def test_one_row_products(dtype, layout):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 32, generator=g).to(dtype)
    if layout == "col":
        w = w.t().contiguous().t()
    b, r = torch.randn(48, generator=g).to(dtype), torch.randn(1, 1, 48, generator=g).to(dtype)
    x = torch.randn(1, 1, 32, generator=g).to(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1e-2)   # bf16: 2 ulp
    torch.testing.assert_close(linear(x, w), F.linear(x, w), **tol)
    torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), **tol)
    torch.testing.assert_close(linear_add(r, x, w), r + F.linear(x, w), **tol)
    assert linear(x[0, 0], w).shape == (48,)


def test_pack_layout_follows_the_dtype_rule(pair):
    _, model = pair
    m = rt.pack(copy.deepcopy(model))
    blk = next(b for b in m.modules() if getattr(b, "_groups", None))
    total = blk._groups["qkv"].wt.shape[0]
    assert blk.q.weight.stride() == (1, total)                                    # fp32: column-major
    m.to(torch.bfloat16)                                                         # re-packed: row-major
    blk = next(b for b in m.modules() if getattr(b, "_groups", None))
    assert blk.q.weight.stride() == (blk.q.weight.shape[1], 1)
    assert blk.k.weight.data_ptr() == blk.q.weight.data_ptr() + blk.q.weight.numel() * 2
    assert all(p.is_contiguous() for p in m.parameters() if p.dim() == 2 and p.dtype == torch.bfloat16
               and not any(p is mm.weight for g in (blk._groups or {}).values() for mm in g.mods))


def _experts_inputs(N, E=6, D=16, Fd=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g)
    router = torch.randn(E, D, generator=g)
    gate_up, down = torch.randn(E, 2 * Fd, D, generator=g), torch.randn(E, D, Fd, generator=g)
    w, idx = moe.route(h, router, 2, True)
    return h, idx, w, gate_up, down


def reference(h, idx, w, gate_up, down):
    ref = torch.zeros_like(h)
    for t in range(h.shape[0]):
        for j in range(idx.shape[1]):
            e = idx[t, j]
            gg, uu = (gate_up[e] @ h[t]).chunk(2)
            ref[t] += w[t, j] * (down[e] @ (F.silu(gg) * uu))
    return ref


@pytest.mark.parametrize("N", [1, 2, 4])
def test_few_pairs_path_equals_full_path(N, monkeypatch):
    args = _experts_inputs(N)
    few = moe.experts(*args, F.silu)
    monkeypatch.setattr(moe, "FEW", 0)                      # force the sorted per-expert path
    full = moe.experts(*args, F.silu)
    assert (few - full).abs().max().item() < 1e-4 and (few - reference(*args)).abs().max().item() < 1e-4


def test_full_path_with_idle_experts_and_gradients():
    h, idx, w, gate_up, down = _experts_inputs(40, E=8)
    idx = idx % 5                                           # experts 5..7 idle
    gate_up.requires_grad_(True)
    y = moe.experts(h, idx, w, gate_up, down, F.silu)
    assert (y - reference(h, idx, w, gate_up.detach(), down)).abs().max().item() < 1e-4
    y.square().sum().backward()
    assert gate_up.grad is not None and gate_up.grad[5:].abs().max().item() == 0.0
