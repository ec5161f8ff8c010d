"""`omnic diff`: layers added / removed / changed (parameter by parameter, groups as one row), figures with exact
deltas against the two reports, budget verdicts, a stable JSON document whose keys docs/ci-gate.md lists, exit 0
whatever changed and 2 for an invalid spec. Tiny specs written to tmp_path."""
from __future__ import annotations

import copy
import json
import pathlib
import re

from click.testing import CliRunner

import compiler
from compiler.cli import cli
from compiler.diff import diff

ROOT = pathlib.Path(__file__).resolve().parent.parent
LM = {
    "name": "lm",
    "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]}],
    "context": 32,
    "layers": [
        {"id": "embed", "type": "Embedding", "params": {"num_embeddings": 64, "embedding_dim": 16}},
        {"id": "blocks", "type": "TransformerBlock", "params": {"num_heads": 2, "num_kv_heads": 2, "ff_dim": 32,
                                                                "depth": 2}},
        {"id": "norm", "type": "RMSNorm", "params": {}},
        {"id": "head", "type": "Linear", "params": {"out_features": 64, "tie": "embed", "bias": False}},
    ],
    "budget": {"vram": "1MiB"},
}


def write(tmp_path, doc, name):
    p = tmp_path / name
    p.write_text(json.dumps(doc, indent=1))
    return str(p)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def by_name(d):
    return {c["name"]: c for c in d["structure"]}


def test_same_spec_no_changes_zero_deltas():
    d = diff(compiler.compile(LM), compiler.compile(LM))
    assert d["structure"] == [] and d["summary"] == {"added": 0, "removed": 0, "changed": 0}
    assert d["params"]["total"]["delta"] == 0 and d["params"]["total"]["relative"] == 0
    assert all(f["delta"] == 0 for f in d["memory"]["inference"].values())
    assert d["same_settings"] and not d["budget"]["verdict_changed"]


def test_depth_and_width_changes_collapse_per_group():
    a = compiler.compile(LM)
    b = compiler.compile(LM, {"blocks.depth": 4, "blocks.ff_dim": 64})
    d = diff(a, b)
    (blocks,) = d["structure"]                     # one row for the group, not one per copy
    assert blocks["name"] == "blocks" and blocks["change"] == "changed" and blocks["copies"] == 4
    assert blocks["differences"]["copies"] == {"a": 2, "b": 4}
    # the spec's own parameters; layer_index (set per copy) agrees on the copies both have, so it is not listed
    assert blocks["params"] == {"depth": {"a": 2, "b": 4}, "ff_dim": {"a": 32, "b": 64}}
    pc = blocks["differences"]["param_count"]
    assert pc["b"] - pc["a"] == b.report["params"]["total"] - a.report["params"]["total"]
    p = d["params"]["total"]
    assert (p["a"], p["b"]) == (a.report["params"]["total"], b.report["params"]["total"])
    assert p["delta"] == p["b"] - p["a"] and p["relative"] == round(p["delta"] / p["a"], 6)
    f = d["flops"]["prefill"]
    assert (f["a"], f["b"]) == (a.report["flops"]["prefill"], b.report["flops"]["prefill"]) and f["delta"] > 0
    m = d["memory"]["inference"]["nf4"]
    assert m["delta"] == b.report["memory"]["inference"]["nf4"] - a.report["memory"]["inference"]["nf4"]


def test_added_removed_and_type_changes():
    b = copy.deepcopy(LM)
    b["layers"][2] = {"id": "norm", "type": "LayerNorm", "params": {}}
    b["layers"].insert(2, {"id": "extra", "type": "Linear", "params": {"out_features": 16}})
    del b["layers"][1]
    d = diff(compiler.compile(LM), compiler.compile(b))
    rows = by_name(d)
    assert rows["blocks"]["change"] == "removed" and rows["blocks"]["copies"] == 2
    assert rows["extra"]["change"] == "added" and rows["extra"]["param_count"] == 16 * 16 + 16
    assert rows["norm"]["differences"]["type"] == {"a": "RMSNorm", "b": "LayerNorm"}
    assert rows["norm"]["differences"]["inputs"] == {"a": ["blocks"], "b": ["extra"]}
    assert [c["name"] for c in d["structure"]] == ["blocks", "extra", "norm"]      # in the specs' order
    assert d["summary"] == {"added": 1, "removed": 1, "changed": 1}


def test_budget_verdict_change_still_exits_0(tmp_path):
    a = write(tmp_path, LM, "a.json")
    r = run("diff", a, a, "--set-b", "embed.num_embeddings=20000", "--set-b", "head.out_features=20000")
    assert r.exit_code == 0, r.output
    assert "budget verdict changed: pass -> fail" in r.stdout
    assert re.search(r"~ +│ embed +│ Embedding +│ .*num_embeddings 64 -> 20000", r.stdout)
    assert "params total" in r.stdout and "inference nf4" in r.stdout
    d = json.loads(run("diff", a, a, "--set-b", "embed.num_embeddings=20000", "--set-b", "head.out_features=20000",
                       "--json").stdout)
    assert d["budget"]["verdict_changed"] and (d["budget"]["a"]["verdict"], d["budget"]["b"]["verdict"]) == \
        ("pass", "fail")


def test_json_is_stable_and_documented(tmp_path):
    a, b = write(tmp_path, LM, "a.json"), write(tmp_path, {**LM, "context": 64}, "b.json")
    out1 = run("diff", a, b, "--json", "--set", "blocks.depth=3").stdout
    out2 = run("diff", a, b, "--json", "--set", "blocks.depth=3").stdout
    assert out1 == out2
    d = json.loads(out1)
    assert d["omnic_diff"] == 1 and not d["same_settings"] and d["b"]["settings"]["context"] == 64
    assert d["a"]["file"] == a and d["structure"] == []          # --set applies to both sides
    docs = (ROOT / "docs" / "ci-gate.md").read_text()
    for key in d:
        assert f"`{key}`" in docs, f"docs/ci-gate.md does not describe diff key {key!r}"


def test_invalid_spec_exits_2(tmp_path):
    a = write(tmp_path, LM, "a.json")
    bad = write(tmp_path, {**LM, "layers": LM["layers"] + [{"type": "Nope", "params": {}}]}, "bad.json")
    r = run("diff", a, bad)
    assert r.exit_code == 2 and "unknown layer type 'Nope'" in r.output and "nothing compared" in r.output
