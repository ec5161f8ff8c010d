"""What a newcomer finds in the checkout: the licence file matches pyproject's licence, a changelog, `py.typed`
markers shipped as package data, and examples that compile, run and match the README."""
from __future__ import annotations

import json
import pathlib
import re
import sys

import pytest
from click.testing import CliRunner

from compiler import compile
from compiler.cli import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pytest.skip("tomllib needs Python 3.11")


def test_licence_file_matches_pyproject():
    assert _pyproject()["project"]["license"]["text"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_changelog_and_typed_markers():
    log = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    from compiler import __version__
    assert "## [Unreleased]" in log and f"## [{__version__}]" in log
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    for pkg in ("compiler", "runtime_common", "runtime_torch", "runtime_mlx"):
        assert (ROOT / pkg / "py.typed").exists() and "py.typed" in data[pkg]


def test_the_readme_tiny_lm_is_the_example():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = json.loads(re.search(r"## A first spec\n\n```json\n(.*?)```", readme, re.S).group(1))
    example = json.loads((ROOT / "examples" / "tiny_lm.json").read_text())
    assert {k: v for k, v in example.items() if k != "$schema"} == {k: v for k, v in block.items() if k != "$schema"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_compile_and_meet_their_budget(path):
    c = compile(str(path))
    assert c.ok and not [d for d in c.diagnostics if d.severity == "warning"], [d.render() for d in c.diagnostics]
    assert CliRunner().invoke(cli, ["check", "-q", str(path)]).exit_code == 0


def test_example_kinds():
    ops = {p.stem: {n.op for n in compile(str(p)).graph.nodes()} for p in EXAMPLES}
    assert {"tiny_lm", "tiny_vlm", "tiny_moe"} <= ops.keys()
    assert "MergeImageTokens" in ops["tiny_vlm"] and "GQA_MoE_Layer" in ops["tiny_moe"]
    rep = compile(str(ROOT / "examples" / "tiny_moe.json")).report
    assert rep["params"]["active"] < rep["params"]["total"]


def test_the_readme_error_example_is_what_omnic_prints(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## A first spec\n\n```json\n(.*?)```", readme, re.S).group(1)
    shown = re.search(r"```\n(tiny\.json:\d+:\d+: error: .*?)```", readme, re.S).group(1)
    (tmp_path / "tiny.json").write_text(block.replace('"num_embeddings": 32000, ', ""))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["check", "tiny.json"])
    assert r.exit_code == 2 and r.stderr == shown
