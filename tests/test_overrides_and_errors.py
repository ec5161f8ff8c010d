"""What a newcomer types first: `--set <dotted layer id>.<param>` on every shipped spec, one error per root cause,
a transformers config recognised, format hints by bit width, `$schema` (not `schema_`) in hints, errors with the
source line and a caret. No torch needed."""
from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from compiler import compile
from compiler.cli import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in (ROOT / "specs").rglob("*.json") if "components" not in p.parts and p.name != "schema.json")


def _ids(path):
    return [l["id"] for l in json.loads(path.read_text())["layers"] if "id" in l]


# --- 5. --set reaches dotted layer ids --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_set_reaches_every_layer_id_of_every_shipped_spec(path):
    """`<id>.note=...` (every layer takes a note) lands in that layer's params for every id, dotted or not, and in
    no other layer."""
    for lid in _ids(path):
        c = compile(str(path), overrides={f"{lid}.note": "probe"})
        assert c.ok, (lid, [d.render() for d in c.errors])
        hit = [l.get("id") for l in c.doc.layers if l.get("params", {}).get("note") == "probe"]
        assert hit == [lid]


def _stack(doc):
    """(overrides, the same change made by hand) that shrink the last stack of a spec to 2 layers."""
    for i, l in reversed(list(enumerate(doc["layers"]))):
        p = l.get("params", {})
        if "id" not in l:
            continue
        for k in ("depth", "repeat", "layers"):
            if isinstance(p.get(k), int) and p[k] > 2:
                over = {f"{l['id']}.{k}": 2}
                if "layer_types" in p:
                    over[f"{l['id']}.layer_types"] = p["layer_types"][:2]
                return over, lambda d, i=i, over=over: d["layers"][i]["params"].update(
                    {key.rsplit(".", 1)[1]: v for key, v in over.items()})
        if isinstance(p.get("llm"), dict):                    # FoveatedVLM: the language model's layers
            return {f"{l['id']}.llm.layers": 2}, lambda d, i=i: d["layers"][i]["params"]["llm"].update(layers=2)
    raise AssertionError("every shipped spec has a stack to shrink")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_set_depth_of_a_dotted_stack_matches_editing_the_file(path):
    """The override equals editing the JSON by hand (the reference): the same parameter count, fewer than before."""
    over, edit = _stack(json.loads(path.read_text()))
    by_set = compile(str(path), overrides=over)
    edited = json.loads(path.read_text())
    edit(edited)
    copy = path.parent / f".edited-{path.name}"        # beside the original: includes resolve from its folder
    try:
        copy.write_text(json.dumps(edited))
        hand = compile(str(copy))
    finally:
        copy.unlink(missing_ok=True)
    assert by_set.ok and hand.ok, [d.render() for d in by_set.errors + hand.errors]
    assert by_set.report["params"]["total"] == hand.report["params"]["total"]
    assert by_set.report["params"]["total"] < compile(str(path)).report["params"]["total"]


def test_set_unknown_id_names_the_nearest():
    c = compile(str(ROOT / "specs/oculus.json"), overrides={"lm.layers": 2})
    [e] = c.errors
    assert "no top-level key or layer id is a prefix" in e.message and "lm.model.layers" in e.hint


# --- 7. one root cause, one error -------------------------------------------------------------------------------------
TINY = {
    "name": "tiny", "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]}], "context": 16,
    "layers": [
        {"id": "embed", "type": "Embedding", "params": {"embedding_dim": 16}},
        {"id": "blocks", "type": "TransformerBlock", "params": {"num_heads": 2, "ff_dim": 32}, "repeat": 2},
        {"id": "norm", "type": "RMSNorm", "params": {}, "inputs": ["blocks"]},
        {"id": "head", "type": "Linear", "params": {"out_features": 100, "bias": False, "tie": "embed"}},
    ],
}


def test_missing_embedding_size_is_one_error():
    [e] = compile(TINY).errors
    assert e.path == "layers[0].params.num_embeddings" and "missing" in e.message


def test_quoted_patch_size_is_one_error():
    doc = {"name": "v", "layers": [
        {"id": "patch", "type": "PatchEmbed", "params": {"patch_size": "16", "embed_dim": 32}},
        {"id": "vit", "type": "TransformerBlock", "params": {"num_heads": 2, "ff_dim": 64}, "repeat": 2},
        {"type": "LayerNorm", "params": {}}, {"type": "Linear", "params": {"out_features": 10}}]}
    [e] = compile(doc).errors
    assert e.path == "layers[0].params.patch_size" and e.hint == "write the number without quotes"


def test_a_real_unknown_input_is_still_reported():
    doc = json.loads(json.dumps(TINY))
    doc["layers"][0]["params"]["num_embeddings"] = 100
    doc["layers"][2]["inputs"] = ["blokcs"]
    [e] = compile(doc).errors
    assert "unknown input 'blokcs'" in e.message and "blocks" in e.hint


# --- 8, 9, 10 ---------------------------------------------------------------------------------------------------------
def test_a_transformers_config_points_to_import_hf(tmp_path):
    from transformers import LlamaConfig
    LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                vocab_size=100).save_pretrained(tmp_path)
    r = CliRunner().invoke(cli, ["check", str(tmp_path / "config.json")])
    assert r.exit_code == 2
    assert r.output.count("error:") == 1, r.output
    assert "transformers config.json" in r.output and "omnic import-hf" in r.output


@pytest.mark.parametrize("name, want", [("int4", ["nf4", "gptq-int4", "awq-int4", "mlx-4bit", "q4_k"]),
                                        ("4bit", ["nf4", "q4_k"]), ("int8x", ["int8", "fp8", "q8_0"])])
def test_format_hint_lists_formats_of_that_width(name, want, tmp_path):
    doc = {**TINY, "budget": {"vram": "1GiB", "format": name}}
    hints = " ".join(d.hint or "" for d in compile(doc).errors)
    assert all(f in hints for f in want), hints
    (tmp_path / "s.json").write_text(json.dumps(TINY))
    r = CliRunner().invoke(cli, ["check", str(tmp_path / "s.json"), "--format", name])
    assert all(f in r.output for f in want) and "int8'?" not in r.output


def test_known_keys_name_dollar_schema():
    doc = {**TINY, "schemax": "x"}
    [e] = [d for d in compile(doc).errors if d.path == "schemax"]
    assert "'$schema'" in e.hint and "schema_" not in e.hint
    doc = {**TINY, "colour": "x"}
    [e] = [d for d in compile(doc).errors if d.path == "colour"]
    assert "$schema" in e.hint and "schema_" not in e.hint


# --- 6. errors first, with the source line and a caret -----------------------------------------------------------------
def test_invalid_spec_prints_errors_with_caret_and_no_tables(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(TINY, indent=1))
    r = CliRunner().invoke(cli, ["check", str(p)])
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{p}:") and "num_embeddings: required key is missing" in lines[0]
    src, caret = lines[1], lines[2]
    assert '"params": {' in src and caret.strip().startswith("|") and caret.endswith("^")
    col = int(lines[0].split(":")[2])
    assert src[caret.index("^")] == src.split("| ", 1)[1][col - 1]
