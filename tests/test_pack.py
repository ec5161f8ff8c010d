"""runtime_torch.pack: the decode layout changes storage only (names, shapes, values), the fused products give the
separate ones' results, and everything that touches weights (gradients, `.to`, save / load) still works; the
decode-path pieces that came with it (RMSNorm kernel, RoPE by roll, KV buffers, last-token logits) are checked
against the plain formulas they replace."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import runtime_torch as rt
from runtime_torch.generate import DecodeSession, generate
from runtime_torch.cache import LayerCache
from runtime_torch.kernels import apply_rope
from tests.hf_models import hf_model, omnic_from_hf


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return omnic_from_hf(hf_model("llama"), tmp_path_factory.mktemp("llama"))


def fresh(model):
    """A copy of `model` with contiguous row-major weights."""
    import copy
    return rt.unpack(copy.deepcopy(model))


def ids(shape=(2, 7), seed=0):
    return torch.randint(0, 128, shape, generator=torch.Generator().manual_seed(seed))


def test_pack_changes_storage_only(llama):
    plain = fresh(llama)
    packed = rt.pack(fresh(llama))
    a, b = plain.state_dict(), packed.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
    blk = packed.node("lm.model.layers.0")
    q, k, v = blk.q.weight, blk.k.weight, blk.v.weight
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
    total = q.shape[0] + k.shape[0] + v.shape[0]
    assert q.stride() == (1, total) and blk.gate.weight.stride() == (1, 2 * blk.gate.weight.shape[0])
    head = packed.param("lm.model.embed_tokens.weight")             # tied: the head reads it as a matrix
    assert head.stride() == (1, head.shape[0])
    assert blk.down.weight.is_contiguous()                        # out < in: row-major is the faster read


def test_fused_products_equal_separate_ones(llama):
    plain, packed = fresh(llama), rt.pack(fresh(llama))
    blk = packed.node("lm.model.layers.1")
    with torch.no_grad():
        assert blk._fused("qkv") is not None and blk._fused("gate_up") is not None
        want, got = plain(input_ids=ids())["lm.lm_head"], packed(input_ids=ids())["lm.lm_head"]
    assert (want - got).abs().max().item() < 1e-5
    assert blk._fused("qkv") is None             # grad enabled and parameters that want one: separate products


def test_gradients_reach_packed_parameters(llama):
    plain, packed = fresh(llama), rt.pack(fresh(llama))
    for m in (plain, packed):
        F.cross_entropy(m(input_ids=ids())["lm.lm_head"].flatten(0, 1), ids().flatten()).backward()
    gp, gq = dict(plain.named_parameters()), dict(packed.named_parameters())
    for name in ("lm.model.layers.0.self_attn.k_proj.weight", "lm.model.layers.0.mlp.up_proj.weight",
                 "lm.model.embed_tokens.weight"):
        assert gq[name].grad is not None and (gq[name].grad - gp[name].grad).abs().max().item() < 1e-5, name


def test_to_repacks_and_load_keeps_layout(llama, tmp_path):
    packed = rt.pack(fresh(llama)).to(torch.float64)
    blk = packed.node("lm.model.layers.0")
    assert blk.q.weight.dtype == torch.float64 and blk._groups["qkv"].ptrs == blk._groups["qkv"]._ptrs()
    rt.save_weights(llama, tmp_path / "w.safetensors")
    packed = rt.pack(fresh(llama))
    ptrs = packed.node("lm.model.layers.0")._groups["qkv"].ptrs
    with torch.no_grad():
        for p in packed.parameters():
            p.zero_()
    rt.load_weights(packed, tmp_path / "w.safetensors")
    assert packed.node("lm.model.layers.0")._groups["qkv"]._ptrs() == ptrs         # loaded in place
    with torch.no_grad():
        assert torch.allclose(packed(input_ids=ids())["lm.lm_head"], fresh(llama)(input_ids=ids())["lm.lm_head"],
                              atol=1e-5)
    rt.save_weights(packed, tmp_path / "again.safetensors")                   # contiguous copies of the views
    from safetensors.torch import load_file
    a, b = load_file(tmp_path / "w.safetensors"), load_file(tmp_path / "again.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_replaced_parameter_disables_the_fused_product(llama):
    packed = rt.pack(fresh(llama))
    blk = packed.node("lm.model.layers.0")
    blk.k.weight = torch.nn.Parameter(torch.zeros_like(blk.k.weight))
    with torch.no_grad():
        assert blk._fused("qkv") is None
        assert blk._fused("gate_up") is not None


@pytest.mark.parametrize("d", [8, 64, 96, 576, 1000, 2048])
def test_rms_norm_kernel_is_the_formula(d):
    x, w = torch.randn(50, 3, d) * 3, torch.randn(d)
    h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.equal(F.rms_norm(x, (d,), w, 1e-6), w * h)


@pytest.mark.parametrize("rd,hs", [(16, 16), (8, 16), (64, 64)])
def test_rope_by_roll_is_rotate_half(rd, hs):
    x, ang = torch.randn(2, 3, 5, hs), torch.randn(5, rd)
    cos, sin = ang.cos(), ang.sin()
    xr = x[..., :rd]
    want = torch.cat((xr * cos + torch.cat((-xr[..., rd // 2:], xr[..., :rd // 2]), -1) * sin, x[..., rd:]), -1)
    signed = torch.cat((-sin[:, :rd // 2], sin[:, rd // 2:]), -1)
    assert torch.equal(apply_rope(x, cos, signed, rd), want)


def test_kv_buffer_growth_and_reserve():
    ks = [torch.randn(1, 2, n, 4) for n in (3, 1, 1, 6, 1)]
    grown, reserved = LayerCache(), LayerCache(reserve=12)
    for k in ks:
        a, _ = grown.extend(k, k + 1, None)
        b, _ = reserved.extend(k, k + 1, None)
        assert torch.equal(a, b)
    assert torch.equal(grown.k, torch.cat(ks, dim=2)) and torch.equal(grown.v, torch.cat(ks, dim=2) + 1)
    assert reserved.kbuf.shape[2] == 12 and grown.kbuf.shape[2] >= 12
    with pytest.raises(ValueError, match="batch"):
        grown.extend(torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4), None)   # was broadcast or mis-copied
    w = LayerCache()
    for k in ks:
        w.extend(k, k, 4)
    assert torch.equal(w.k, torch.cat(ks, dim=2)[:, :, -3:]) and w.kbuf.untyped_storage().nbytes() == 3 * 2 * 4 * 4


def test_last_token_logits_and_generate_without_pack(llama):
    model = fresh(llama)
    s_all, s_last = DecodeSession(model, pack=False), DecodeSession(model, pack=False)
    assert s_last.last_block == "lm.model.layers.1"
    full, last = s_all.step(ids()), s_last.step(ids(), last=True)
    assert last.shape[1] == 1 and torch.allclose(full[:, -1:], last, atol=1e-6)
    assert not getattr(model, "_packed", False)
    assert torch.equal(generate(model, ids((1, 4)), 6, pack=False), generate(fresh(llama), ids((1, 4)), 6))


def test_model_trains_after_generate_under_inference_mode(llama):
    """pack() and the RoPE tables made during an inference-mode generate are normal tensors: training works after."""
    model = fresh(llama)
    with torch.inference_mode():
        generate(model, ids((1, 4)), 3)
    assert model._packed and not any(p.is_inference() for p in model.parameters())
    loss = model(input_ids=ids())["lm.lm_head"].square().mean()
    loss.backward()
    assert model.param("lm.model.layers.0.self_attn.q_proj.weight").grad is not None


@pytest.mark.parametrize("rope", ["none", "1d"])
def test_one_token_path_with_biases_and_windows(rope, monkeypatch):
    """The packed one-token attention (biased q|k|v, a sliding layer, with and without RoPE) gives the logits of the
    full forward at every step, and generate's tokens equal greedy recomputation."""
    import compiler
    from runtime_torch.ops.transformer import TransformerBlock
    c = compiler.compile({"name": "t", "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]}], "layers": [
        {"id": "emb", "type": "Embedding", "params": {"num_embeddings": 64, "embedding_dim": 32}},
        {"id": "blocks", "type": "TransformerBlock", "params": {
            "depth": 2, "num_heads": 4, "num_kv_heads": 2, "ff_dim": 48, "mlp": "swiglu", "norm": "rmsnorm",
            "causal": True, "rope": rope, "sliding_window": 3,
            "layer_types": ["full_attention", "sliding_attention"]}},
        {"id": "head", "type": "Linear", "params": {"out_features": 64}}]})
    assert c.ok, [d.render() for d in c.errors]
    model = rt.build(c, seed=4).eval()
    seq = ids((2, 9), seed=5) % 64
    calls = []
    one = TransformerBlock._attend_one
    monkeypatch.setattr(TransformerBlock, "_attend_one", lambda *a: calls.append(1) or one(*a))
    with torch.no_grad():
        full = model(ids=seq)["head"]                                          # (2, 9, 64)
        s = DecodeSession(model, fast=False)         # the block's own one-token path
        steps = [s.step(seq[:, :3])] + [s.step(seq[:, t:t + 1]) for t in range(3, 9)]
    assert len(calls) == 6 * 2 and model.node("blocks.0")._groups["qkv"].bias is not None
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-5
    got, want = generate(model, seq[:, :3], 6), seq[:, :3]
    with torch.no_grad():
        for _ in range(6):
            want = torch.cat([want, model(ids=want)["head"][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert got.tolist() == want.tolist()
