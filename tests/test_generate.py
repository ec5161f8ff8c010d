"""runtime_torch.generate: KV cache, sliding windows and conv state against transformers' generate and against
full recomputation, on the tiny random models of test_parity_lm."""
from __future__ import annotations

import pytest
import torch

import compiler
import runtime_torch as rt
from runtime_torch.generate import DecodeSession, generate
from tests.hf_models import TINY, hf_model, omnic_from_hf

PROMPT, NEW = 6, 14          # Gemma's window is 4: prompt + generation is 5x longer


@pytest.fixture(scope="module", params=list(TINY))
def pair(request, tmp_path_factory):
    hf = hf_model(request.param)
    return request.param, hf, omnic_from_hf(hf, tmp_path_factory.mktemp(request.param))


def test_greedy_equals_transformers(pair):
    family, hf, model = pair
    ids = torch.randint(3, 128, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1, max_new_tokens=NEW,
                       eos_token_id=None, pad_token_id=0)
    got = generate(model, ids, NEW)
    assert got.shape == (1, PROMPT + NEW)
    assert got.tolist() == want.tolist(), family
    assert len(set(got[0, PROMPT:].tolist())) > 2, "degenerate test: the model repeats one token"


def test_cached_chunks_equal_full_forward(pair):
    """Feeding the sequence in chunks of 3, 1, 5, 2 tokens through the caches gives the full forward's logits
    (multi-token steps over a cache exercise the sliding mask and the conv state)."""
    family, _, model = pair
    ids = torch.randint(0, 128, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(input_ids=ids)["lm.lm_head"]
    s = DecodeSession(model)
    parts, start = [], 0
    for n in (3, 1, 5, 2):
        parts.append(s.step(ids[:, start:start + n]))
        start += n
    assert s.seen == 11
    assert (torch.cat(parts, dim=1) - full).abs().max().item() < 1e-4, family


def test_cache_sizes(pair):
    family, _, model = pair
    s = DecodeSession(model)
    s.step(torch.zeros(2, 9, dtype=torch.long))
    for name, cache in s.caches.items():
        blk = model.node(name)
        if blk.kind == "conv":
            assert cache.state["conv"].shape == (2, blk.p.D, blk.p.conv_kernel - 1) and cache.k is None
        elif blk.window:
            assert cache.k.shape[2] == min(9, blk.window - 1)
        else:
            assert cache.k.shape == (2, blk.KV, 9, blk.hd) and cache.v.shape == cache.k.shape


def test_sampling(pair):
    _, _, model = pair
    ids = torch.randint(3, 128, (2, 4), generator=torch.Generator().manual_seed(4))
    a = generate(model, ids, 8, do_sample=True, temperature=0.7, top_k=20, seed=5)
    b = generate(model, ids, 8, do_sample=True, temperature=0.7, top_k=20, seed=5)
    assert torch.equal(a, b) and torch.equal(a[:, :4], ids)
    assert torch.equal(generate(model, ids, 5, do_sample=True, top_k=1, seed=9), generate(model, ids, 5))


def test_eos_stops_and_pads():
    c = compiler.compile({"name": "t", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
                          "layers": [{"id": "lm", "type": "DecoderLM",
                                      "params": {"vocab_size": 16, "hidden": 16, "layers": 1, "heads": 2,
                                                 "ff_dim": 16}}]})
    model = rt.build(c, seed=1)
    ids = torch.randint(0, 16, (2, 3), generator=torch.Generator().manual_seed(0))
    free = generate(model, ids, 6)
    eos = int(free[0, 3])                               # row 0's first generated token
    out = generate(model, ids, 6, eos_token_id=eos)
    assert torch.equal(out[0, 3:], torch.full_like(out[0, 3:], eos))
    row1 = free[1, 3:].tolist()
    if eos not in row1:
        assert out.shape[1] == 9
    else:
        assert out.shape[1] == 3 + row1.index(eos) + 1


def test_refuses_non_decoder_graphs():
    c = compiler.compile({"name": "enc", "inputs": [{"name": "x", "kind": "tokens", "shape": ["B", "T", 8]}],
                          "layers": [{"type": "TransformerBlock", "params": {"num_heads": 2, "ff_dim": 8}}]})
    with pytest.raises(ValueError, match="token-id input"):
        generate(rt.build(c), torch.zeros(1, 2, dtype=torch.long), 1)


def _joined(axis: str):
    """ids -> Embedding -> Concat(axis) with a fixed tokens input -> causal block -> head."""
    prefix = ["B", 3, 8] if axis == "sequence" else ["B", "T", 8]
    return compiler.compile({"name": "join", "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]},
                                                        {"name": "prefix", "kind": "tokens", "shape": prefix}],
                             "layers": [{"type": "Embedding", "id": "emb", "inputs": ["ids"],
                                         "params": {"num_embeddings": 11, "embedding_dim": 8}},
                                        {"type": "Concat", "id": "join", "inputs": ["prefix", "emb"],
                                         "params": {"axis": axis}},
                                        {"type": "TransformerBlock", "params": {"num_heads": 2, "ff_dim": 8,
                                                                                "causal": True, "rope": "1d"}},
                                        {"type": "Linear", "params": {"out_features": 11}}]})


def test_concat_decodes_as_its_params_declare():
    """Decoding asks the op (`decode_as(params)`), never its name: a Concat along the sequence joins the text with a
    fixed stream (new tokens pass through, and the cached decode equals recomputation); along the channels it
    is refused."""
    from compiler import registry
    concat = registry.get("Concat")
    assert concat.decode_as(concat.Params(axis="sequence")) == "text_join"
    assert concat.decode_as(concat.Params(axis="channels")) is None
    c = _joined("sequence")
    assert c.ok, [d.render() for d in c.errors]
    model = rt.build(c, seed=1).eval()
    ids, prefix = torch.randint(0, 11, (2, 4)), torch.randn(2, 3, 8)
    got = generate(model, ids, 3, prefix=prefix)
    seq = ids
    with torch.no_grad():
        for _ in range(3):
            nxt = next(iter(model(ids=seq, prefix=prefix).values()))[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert got.tolist() == seq.tolist()
    c = _joined("channels")
    assert c.ok, [d.render() for d in c.errors]
    with pytest.raises(ValueError, match=r"join \(Concat\) on the text path declares no decode state"):
        DecodeSession(rt.build(c))


def test_cache_bytes_equal_the_reports_decode_state(pair):
    """The compiler's decode state at (batch 2, context 9) equals the bytes the runtime's caches really hold (their
    storages: preallocated KV buffers included), with room reserved for the 9 tokens as generate reserves it."""
    family, _, model = pair
    s = DecodeSession(model, reserve=9)
    s.step(torch.zeros(2, 5, dtype=torch.long))
    for _ in range(4):
        s.step(torch.zeros(2, 1, dtype=torch.long))
    held = sum(t.untyped_storage().nbytes() for c in s.caches.values() for t in c.tensors())
    report = compiler.compile(_spec_of(family), batch=2, context=9).report
    assert held == report["memory"]["decode_state"]["fp32"], family


def _spec_of(family):
    from compiler.importers import spec_from_hf_config
    return spec_from_hf_config(hf_model(family).config.to_dict())


VLMS = ["specs/nanovlm/original_small.json", "specs/nanovlm/dinov3_gemma.json", "specs/oculus.json"]


@pytest.mark.parametrize("path", VLMS)
def test_vlm_generate_equals_recomputation(path):
    """A VLM decodes with its caches (image tokens cached once by the prefill) exactly as greedy recomputation of
    the whole sequence, image included, at every step."""
    from tests.shrink import SHRINK, make_inputs
    c = compiler.compile(path, overrides=SHRINK[path])
    assert c.ok, [d.render() for d in c.errors]
    model = rt.build(c, seed=3).eval()
    inputs = {k: torch.from_numpy(v) for k, v in make_inputs(c, seed=1, env={"B": 2, "T": 8, "F": 2}).items()}
    ids_name = next(n for n in model.input_names if c.graph[n].out.kind == "ids")
    session = DecodeSession(model)
    ids = inputs.pop(ids_name)
    got = generate(model, ids, 5, logits=session.logits, **inputs)
    seq = ids
    with torch.no_grad():
        for _ in range(5):
            logits = model(**{ids_name: seq}, **inputs)[session.logits]
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert got.tolist() == seq.tolist()
