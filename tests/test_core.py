"""Compiler core: dimensions, strict JSON with positions, accounting against independent references, budgets."""
from __future__ import annotations

import json

import pytest

import compiler
from compiler.dims import Dim, parse_dim
from compiler.source import parse_text
from compiler.diagnostics import SpecError


def llama_spec(layers, d, heads, kv, ff, vocab, tied=True, theta=1e5):
    return {"name": "llama", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}], "layers": [
        {"id": "embed", "type": "Embedding", "params": {"num_embeddings": vocab, "embedding_dim": d}},
        {"id": "layers", "type": "TransformerBlock", "params": {
            "depth": layers, "num_heads": heads, "num_kv_heads": kv, "ff_dim": ff, "mlp": "swiglu", "mlp_bias": False,
            "norm": "rmsnorm", "attn_bias": [], "causal": True, "rope": "1d", "rope_theta": theta, "names": "llama"}},
        {"id": "norm", "type": "RMSNorm", "params": {}},
        {"id": "lm_head", "type": "Linear", "params": {"out_features": vocab, "bias": False,
                                                       **({"tie": "embed"} if tied else {})}}]}


# --- dims --------------------------------------------------------------------------------------------------------------
def test_dims_arithmetic_and_marginal():
    t = parse_dim("T+64")
    assert str(t) == "T+64" and t.eval({"T": 10}) == 74
    assert (t * 2).marginal("T", {}) == 2
    assert str(Dim.sym("B") * Dim.sym("F")) == "B*F"
    assert (parse_dim("2*T") // 2) == Dim.sym("T")
    with pytest.raises(ValueError):
        parse_dim("T+1") // 2
    assert parse_dim("B*T").marginal("T", {"B": 3}) == 3
    import copy
    import pickle
    d = parse_dim("2*B*T+64")
    assert copy.deepcopy(d) is d and pickle.loads(pickle.dumps(d)) == d   # immutable: copies share, pickles rebuild


# --- source ------------------------------------------------------------------------------------------------------------
def test_positions_of_values_and_keys():
    text = '{\n  "a": [1,\n    {"b": true}]\n}'
    src = parse_text(text, "x.json")
    assert src.locs[("a", 1, "b")] == (3, 11)
    assert src.key_locs[("a", 1, "b")] == (3, 6)
    assert src.locate(("a", 1, "missing")) == (3, 5)


@pytest.mark.parametrize("text,needle", [
    ('{"a": NaN}', "NaN"), ('{"a": 1, "a": 2}', "duplicate key"), ('{"a": 1,}', "trailing comma"),
    ("{'a': 1}", "double quotes"), ('{"a": 1e999}', "out of range"), ('{"a": 1} x', "invalid JSON"), ('{"a": 1} 2', "after the end"),
])
def test_strict_json(text, needle):
    with pytest.raises(SpecError) as e:
        parse_text(text, "s.json")
    d = e.value.diagnostics[0]
    assert d.line == 1 and d.col >= 1
    assert needle in d.message + (d.hint or "")


def test_wrong_types_are_errors_not_coerced():
    spec = llama_spec(2, 64, 4, 2, 128, 100)
    spec["layers"][1]["params"]["num_heads"] = "4"
    spec["layers"][1]["params"]["causal"] = 1
    c = compiler.compile(json.dumps(spec, indent=1))
    msgs = [d.message for d in c.errors]
    assert any("expected an integer, got the string '4'" in m for m in msgs)
    assert any("expected true or false, got an integer" in m for m in msgs)
    assert all(d.line for d in c.errors)


def test_kv_heads_must_divide_heads_located():
    spec = llama_spec(2, 64, 4, 3, 128, 100)
    c = compiler.compile(json.dumps(spec, indent=2))
    (e,) = c.errors
    assert e.path == "layers[1].params.num_kv_heads" and "3 does not divide num_heads 4" in e.message
    assert e.line is not None and e.hint


def test_unknown_type_and_key_did_you_mean():
    spec = llama_spec(1, 64, 4, 2, 128, 100)
    spec["layers"][2]["type"] = "RMSnorm"
    spec["layers"][1]["params"]["num_head"] = 4
    c = compiler.compile(spec)
    hints = " ".join(d.hint or "" for d in c.errors)
    assert "did you mean 'RMSNorm'?" in hints and "did you mean 'num_heads'?" in hints


# --- accounting against independent references -----------------------------------------------------------------------
def test_smollm2_135m_exact():
    c = compiler.compile(llama_spec(30, 576, 9, 3, 1536, 49152))
    assert c.ok, [d.render() for d in c.diagnostics]
    assert c.report["params"]["total"] == 134_515_008


def test_llama3_8b_kv_cache_is_128_kib_per_token():
    # accounting reference: Llama-3-8B in bf16 keeps 128 KiB of K and V per token
    c = compiler.compile(llama_spec(32, 4096, 32, 8, 14336, 128256, tied=False, theta=5e5), context=1, batch=1)
    assert c.report["memory"]["decode_state"]["bf16"] == 128 * 1024


def test_nf4_keeps_embeddings_and_head_16bit():
    c = compiler.compile(llama_spec(32, 4096, 32, 8, 14336, 128256, tied=False))
    w = c.report["memory"]["weights"]
    emb_and_head = 2 * 128256 * 4096
    linear = c.report["params"]["total"] - emb_and_head - (2 * 32 + 1) * 4096
    expected = (emb_and_head * 16 + linear * 4.5 + (2 * 32 + 1) * 4096 * 16) / 8
    assert w["nf4"] == round(expected)
    # the naive fp32 / 8 estimate is about 30% low
    assert w["fp32"] / 8 < 0.8 * w["nf4"]


def test_attention_flops_by_hand():
    # one bidirectional block, D=8, 2 heads of 4, ff 16, plain GELU MLP, 5 tokens, batch 1
    spec = {"name": "b", "inputs": [{"name": "x", "kind": "tokens", "shape": ["B", 5, 8]}], "layers": [
        {"type": "TransformerBlock", "params": {"num_heads": 2, "ff_dim": 16}}]}
    c = compiler.compile(spec, batch=1)
    proj = 2 * 5 * 8 * 8 * 4          # q, k, v, o: 4 (5x8)@(8x8) products
    scores = 2 * 2 * 5 * 5 * 4 * 2    # QK^T and AV: heads x q x kv x head_dim, twice
    mlp = 2 * 5 * 8 * 16 * 2
    assert c.report["flops"]["prefill"] == proj + scores + mlp


def test_budget_verdicts():
    spec = llama_spec(2, 64, 4, 2, 128, 100)
    spec["budget"] = {"vram": "1MiB", "format": "bf16"}
    c = compiler.compile(spec)
    assert c.report["budget"]["verdict"] == "fail" and c.report["budget"]["figure"] > 2**20
    spec["budget"] = {"vram": "1GiB", "format": "bf16"}
    assert compiler.compile(spec).report["budget"]["verdict"] == "pass"


def test_overrides_shrink_a_spec():
    c = compiler.compile(llama_spec(30, 576, 9, 3, 1536, 49152), overrides={"layers[1].params.depth": 2, "embed.num_embeddings": 10,
                                                                            "lm_head.out_features": 10})
    assert c.ok and len([n for n in c.graph.nodes() if n.op == "TransformerBlock"]) == 2


def test_compiler_does_not_import_frameworks():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None; sys.modules['mlx'] = None\n"
            "import compiler, json\n"
            "print(compiler.compile(json.loads(sys.argv[1])).report['params']['total'])")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(llama_spec(30, 576, 9, 3, 1536, 49152))],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "134515008"


@pytest.mark.parametrize("kw", [{"batch": 0}, {"context": -5}, {"frames": 2.5}, {"batch": True}, {"context": "512"}])
def test_compile_rejects_bad_keyword_arguments(kw):
    """Settings given in Python are range-checked as the CLI's options are (a 0 used to mean "the spec's")."""
    spec = {"name": "t", "inputs": [{"name": "x", "kind": "tokens", "shape": ["B", "T", 8]}],
            "layers": [{"type": "Linear", "params": {"out_features": 4}}]}
    with pytest.raises(ValueError, match=next(iter(kw))):
        compiler.compile(spec, **kw)
    assert compiler.compile(spec, batch=2, context=3).ok
