"""`omnic graph`: repeated blocks collapsed, inferred wiring dashed, inputs / outputs marked, format by extension,
byte-stable DOT and Mermaid, a clear exit 2 when Graphviz is missing. A tiny VLM written to tmp_path."""
from __future__ import annotations

import json
import pathlib
import re
import shutil

import pytest
from click.testing import CliRunner

import compiler
from compiler.ci_outputs import find_specs
from compiler.cli import cli
from compiler.picture import INFERRED, picture, to_dot, to_mermaid

ROOT = pathlib.Path(__file__).resolve().parent.parent
VLM = {
    "name": "tiny-vlm",
    "inputs": [{"name": "pixels", "kind": "image", "shape": ["B", 3, 32, 32]},
               {"name": "ids", "kind": "ids", "shape": ["B", "T"]}],
    "context": 16,
    "outputs": ["head", "vit"],
    "layers": [
        {"id": "vit", "type": "VisionEncoder", "inputs": ["pixels"], "frozen": True,
         "params": {"family": "siglip", "patch_size": 8, "hidden": 32, "layers": 2, "heads": 2, "ff_dim": 64,
                    "image_size": 32}},
        {"id": "proj", "type": "Linear", "params": {"out_features": 32}},                 # inferred: vit -> proj
        {"id": "embed", "type": "Embedding", "inputs": ["ids"], "params": {"num_embeddings": 50, "embedding_dim": 32}},
        {"id": "cat", "type": "Concat", "inputs": ["proj", "embed"], "params": {}},
        {"id": "blocks", "type": "TransformerBlock", "params": {"num_heads": 2, "ff_dim": 64, "depth": 3}},
        {"id": "head", "type": "Linear", "params": {"out_features": 50, "tie": "embed"}},
    ],
}


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "vlm.json"
    p.write_text(json.dumps(VLM, indent=1))
    return str(p)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_boxes_collapse_groups_and_mark_inputs_outputs():
    pic = picture(compiler.compile(VLM).raise_for_errors())
    by = {b.key: b for b in pic.boxes}
    assert by["blocks"].lines[:3] == ["blocks x3", "TransformerBlock", "(B, T+16, 32)"]
    assert by["blocks"].lines[3].startswith("params ") and "each" in by["blocks"].lines[3]
    assert not any(k.startswith("blocks.") for k in by)
    assert by["vit.vision_model.encoder.layers"].lines[0].endswith(" x2") and by["vit.vision_model.embeddings"].frozen
    assert [b.kind for b in pic.boxes if b.key.startswith("input:")] == ["input", "input"]
    assert by["input:ids"].lines == ["input ids", "ids (B, T)"]
    assert by["output:head"].kind == "output" and by["output:head"].lines[1] == "(B, T+16, 50)"
    arrows = {(a.src, a.dst): a for a in pic.arrows}
    assert arrows[("cat", "blocks")].inferred and arrows[("cat", "blocks")].label == INFERRED
    assert not arrows[("proj", "cat")].inferred and not arrows[("input:ids", "embed")].inferred
    assert ("blocks", "blocks") not in arrows


def test_depth_collapses_by_name_prefix():
    pic = picture(compiler.compile(VLM).raise_for_errors(), depth=1)
    vit = next(b for b in pic.boxes if b.key == "vit")
    assert vit.lines[1] == "PatchEmbed, TransformerBlock, LayerNorm (4 nodes)"
    assert ("vit", "proj") in {(a.src, a.dst) for a in pic.arrows}


def test_dot_and_mermaid_text(spec, tmp_path):
    for ext in ("dot", "mmd", "md"):
        r = run("graph", spec, "-o", tmp_path / f"g.{ext}")
        assert r.exit_code == 0, r.output
    dot = (tmp_path / "g.dot").read_text()
    assert re.search(r'"cat" -> "blocks" \[style=dashed, label="inferred"\];', dot)
    assert '"proj" -> "cat";' in dot                      # explicit: solid, no label
    assert 'label="blocks x3\\nTransformerBlock\\n(B, T+16, 32)\\nparams ' in dot
    assert '"input:pixels" [shape=invhouse' in dot and '"output:head" [shape=house' in dot
    mmd = (tmp_path / "g.mmd").read_text()
    assert mmd.startswith("---\ntitle: ") and "\nflowchart TB\n" in mmd
    assert re.search(r'n\d+ -\.->\|"inferred"\| n\d+', mmd) and re.search(r"n\d+ --> n\d+", mmd)
    assert "classDef input" in mmd and "classDef output" in mmd
    md = (tmp_path / "g.md").read_text()
    assert "```mermaid\n" + mmd + "```" in md


def test_same_spec_same_bytes(spec, tmp_path):
    for ext in ("dot", "mmd"):
        run("graph", spec, "-o", tmp_path / f"a.{ext}")
        run("graph", spec, "-o", tmp_path / f"b.{ext}")
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes()
    c = compiler.compile(VLM)
    assert to_dot(picture(c)) == to_dot(picture(compiler.compile(VLM)))
    assert to_mermaid(picture(c)) == to_mermaid(picture(compiler.compile(VLM)))


def test_set_overrides_reach_the_picture(spec, tmp_path):
    r = run("graph", spec, "-o", tmp_path / "g.dot", "--set", "blocks.depth=5")
    assert r.exit_code == 0 and "blocks x5" in (tmp_path / "g.dot").read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_and_png(spec, tmp_path):
    pytest.importorskip("graphviz")
    assert run("graph", spec, "-o", tmp_path / "g.svg").exit_code == 0
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "blocks x3" in svg and "stroke-dasharray" in svg
    assert run("graph", spec, "-o", tmp_path / "g.png").exit_code == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_dot_is_a_clear_exit_2(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    r = run("graph", spec, "-o", tmp_path / "g.svg")
    assert r.exit_code == 2
    assert "graphviz" in r.output and ("apt-get install graphviz" in r.output or "[graph]" in r.output)
    assert not (tmp_path / "g.svg").exists()


def test_bad_extension_and_invalid_spec_exit_2(spec, tmp_path):
    r = run("graph", spec, "-o", tmp_path / "g.jpeg")
    assert r.exit_code == 2 and ".svg" in r.output and ".mmd" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**VLM, "layers": VLM["layers"] + [{"type": "Nope", "params": {}}]}))
    r = run("graph", bad, "-o", tmp_path / "g.dot")
    assert r.exit_code == 2 and "nothing drawn" in r.output and not (tmp_path / "g.dot").exists()


SHIPPED = [str(pathlib.Path(p).relative_to(ROOT)) for p in find_specs([str(ROOT / "specs")])[0]]


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_spec_draws(path):
    c = compiler.compile(str(ROOT / path))
    if not c.ok:
        pytest.skip(f"{path} does not compile (test_core / the spec's owner report it)")
    pic = picture(c)
    assert any(b.kind == "input" for b in pic.boxes) and any(b.kind == "output" for b in pic.boxes)
    keys = {b.key for b in pic.boxes}
    assert all(a.src in keys and a.dst in keys for a in pic.arrows)
    assert to_dot(pic).count(" -> ") == len(pic.arrows)
