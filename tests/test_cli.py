"""The `omnic` command: exit codes, the deciding budget figure, located errors, stable JSON, overrides, summary
collapsing, the schema command and the atomic build directory. Tiny specs written to tmp_path; no torch needed."""
from __future__ import annotations

import json
import re
import sys
import types

import pytest

from compiler import compile
from compiler.cli import cli, main
from compiler.emit import build as build_mod
from compiler.schema import schema_text
from compiler.tables import fmt_bytes
from tests.tiny_specs import CLI_PARAMS as PARAMS, CLI_TINY as TINY, run, write

REPORT_KEYS = {"omnic_report", "name", "settings", "params", "flops", "memory", "inputs", "outputs",
               "inferred_edges", "conventions", "expect", "budget"}


@pytest.fixture
def tiny(tmp_path):
    return write(tmp_path, TINY)


# --- exit codes --------------------------------------------------------------------------------------------------------
def test_under_budget_exits_0(tiny):
    r = run("check", tiny)
    assert r.exit_code == 0, r.output
    assert "memory.inference[bf16] = " in r.stdout and "<= 1GiB: pass" in r.stdout
    assert "params total" in r.stdout and "1.82 K" in r.stdout


def test_over_budget_exits_1_and_prints_the_deciding_figure(tiny):
    fig = compile(tiny, format="nf4").report["memory"]["inference"]["nf4"]
    r = run("check", tiny, "--budget", "1KiB", "--format", "nf4")
    assert r.exit_code == 1, r.output
    assert f"memory.inference[nf4] = {fmt_bytes(fig)} > 1KiB: FAIL" in r.stdout


def test_training_budget_uses_the_training_figure(tiny):
    fig = compile(tiny).report["memory"]["training"]["all"]["total"]
    r = run("check", tiny, "--budget", "1KiB", "--mode", "training", "-q")
    assert r.exit_code == 1
    assert f"memory.training[all] = {fmt_bytes(fig)} > 1KiB: FAIL" in r.stdout


def test_unmet_expectation_exits_1(tmp_path):
    doc = {**TINY, "expect": {"params.total": {"value": "1M"}}}
    r = run("check", write(tmp_path, doc))
    assert r.exit_code == 1
    assert "params.total: claimed 1.00 M, computed 1.82 K" in r.stdout and "FAIL" in r.stdout
    doc = {**TINY, "expect": {"params.total": {"value": 900, "scope": ["embed", "mlp"]}}}
    r = run("check", write(tmp_path, doc), "-q")
    assert r.exit_code == 1
    assert "params.total of embed, mlp: claimed 900, computed 1.02 K" in r.stdout


def test_invalid_spec_exits_2_with_location_and_no_traceback(tmp_path):
    doc = json.loads(json.dumps(TINY))
    doc["layers"][3]["params"]["out_featurs"] = doc["layers"][3]["params"].pop("out_features")
    path = write(tmp_path, doc, "bad.json")
    r = run("check", path)
    assert r.exit_code == 2
    assert re.search(re.escape(path) + r":\d+:\d+: error: layers\[3\]\.params\.out_featurs: unknown key", r.output)
    assert "did you mean 'out_features'?" in r.output
    assert "Traceback" not in r.output
    # errors first, each with its source line and a caret under the column; no tables of a half-wired model
    assert re.search(r'\n  \d+ \| .*"out_featurs": 100.*\n\s+\| +\^', r.output)
    assert r.stdout == ""
    rv = run("check", path, "-v")                # asked for: what could be counted still is, and says so
    assert "partial report" in rv.stdout


@pytest.mark.parametrize("text, needle", [
    ('{"name": "x", "layers": [}', ":1:"),           # JSON syntax
    ('{"name": "x", "layers": [], "name": "y"}', ":1:"),  # duplicate key
])
def test_unreadable_spec_exits_2(tmp_path, text, needle):
    r = run("check", write(tmp_path, text))
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_usage_errors_exit_2(tiny, tmp_path):
    assert run("check", str(tmp_path / "missing.json")).exit_code == 2
    assert run("check", tiny, "--set", "no-equals-sign").exit_code == 2
    r = run("check", tiny, "--format", "nf5")
    assert r.exit_code == 2 and "did you mean 'nf4'" in r.output
    assert run("check", tiny, "--budget", "six gigs").exit_code == 2
    r = run("check", tiny, "--stage", "nope")
    assert r.exit_code == 2 and "unknown stage 'nope'" in r.output


def test_internal_error_is_one_line_exit_3(tiny, monkeypatch, capsys):
    def boom(*a, **k):
        raise RuntimeError("kaboom\nsecond line")
    monkeypatch.setattr("compiler.cli._compile", boom)
    monkeypatch.delenv("OMNIC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["check", tiny])
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert err.strip() == "omnic: internal error (please report): RuntimeError: kaboom"


def test_several_specs_exit_with_the_worst(tiny, tmp_path):
    bad = write(tmp_path, {"name": "x", "layers": [{"type": "Nope"}]}, "bad.json")
    assert run("check", tiny, bad, "-q").exit_code == 2


# --- JSON ----------------------------------------------------------------------------------------------------------------
def test_json_is_stable_and_documented(tiny, tmp_path):
    bad = write(tmp_path, {"name": "x", "layers": [{"type": "Nope"}]}, "bad.json")
    r1 = run("check", tiny, bad, "--json")
    r2 = run("check", tiny, bad, "--json")
    assert r1.exit_code == 2
    assert r1.stdout == r2.stdout
    out = json.loads(r1.stdout)
    assert r1.stdout.strip() == json.dumps(out, indent=2, sort_keys=True)
    ok, invalid = out
    for o in out:
        assert set(o) == {"file", "ok", "exit_code", "report", "diagnostics"}
    assert ok["ok"] is True and ok["exit_code"] == 0 and ok["file"] == tiny
    assert REPORT_KEYS <= set(ok["report"])
    assert ok["report"]["params"]["total"] == PARAMS
    assert ok["report"]["budget"]["verdict"] == "pass"
    assert invalid["report"]["partial"] is True and invalid["exit_code"] == 2 and invalid["ok"] is False
    d = invalid["diagnostics"][0]
    assert set(d) == {"severity", "code", "message", "path", "file", "line", "column", "hint"}
    assert d["severity"] == "error" and d["line"] and d["path"] == "layers[0].type"


def test_json_fields_are_documented():
    """Every key the JSON output has appears in docs/report-format.md."""
    import pathlib
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "report-format.md").read_text()
    scoped = {**TINY, "expect": {"params.total": {"value": 800, "scope": ["embed"]}}}
    rep = compile(scoped, with_nodes=True).report
    keys = {"file", "ok", "exit_code", "report", "diagnostics", "severity", "code", "message", "path", "line",
            "column", "hint", "rows", "total", "label", "copies", "output_bytes"}

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                keys.add(k)
                if k not in ("weights", "decode_state", "activation_peak", "inference", "training", "inputs",
                             "outputs"):
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(rep)
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"undocumented report keys: {missing}"


# --- --set ---------------------------------------------------------------------------------------------------------------
def test_set_overrides(tiny):
    base = json.loads(run("check", tiny, "--json").stdout)[0]["report"]
    r = run("check", tiny, "--json", "--set", "head.out_features=100", "--set", "layers[0].params.num_embeddings=50",
            "--set", "name=renamed", "--set", "expect={}")
    rep = json.loads(r.stdout)[0]["report"]
    assert r.exit_code == 0
    assert rep["name"] == "renamed"                               # not JSON: a plain string
    assert rep["params"]["total"] == base["params"]["total"] - 50 * 8
    r = run("check", tiny, "--json", "--set", "mlp.repeat=5")
    assert json.loads(r.stdout)[0]["report"]["params"]["total"] == base["params"]["total"] + 2 * 72


def test_set_to_a_missing_path_is_an_error(tiny):
    r = run("check", tiny, "--set", "nosuchlayer.x=1")
    assert r.exit_code == 2 and "override 'nosuchlayer.x'" in r.output


def test_batch_and_context(tiny):
    rep = json.loads(run("check", tiny, "--json", "--batch", "2", "--context", "32").stdout)[0]["report"]
    assert rep["settings"]["batch"] == 2 and rep["settings"]["context"] == 32
    assert rep["flops"]["prefill"] == 4 * compile(TINY).report["flops"]["prefill"]


# --- summary -------------------------------------------------------------------------------------------------------------
def test_summary_collapses_repeats(tiny):
    r = run("summary", tiny)
    assert r.exit_code == 0, r.output
    assert "mlp (x3)" in r.stdout and "mlp.1" not in r.stdout
    rows = json.loads(run("summary", tiny, "--json").stdout)
    mlp = next(x for x in rows["rows"] if x["name"] == "mlp")
    assert mlp["copies"] == 3 and mlp["params"] == 3 * 72 and mlp["outputs"]["out"]["shape"] == ["B", "T", 8]
    assert rows["total"]["params"] == PARAMS
    assert [x["name"] for x in rows["rows"]] == ["ids", "embed", "mlp", "norm", "head"]


def test_summary_depth(tmp_path):
    doc = {"name": "d", "inputs": TINY["inputs"], "layers": [
        {"id": "lm.embed", "type": "Embedding", "params": {"num_embeddings": 100, "embedding_dim": 8}},
        {"id": "lm.mlp", "type": "Linear", "params": {"out_features": 8}, "repeat": 2},
        {"id": "head", "type": "Linear", "params": {"out_features": 4}}]}
    rows = json.loads(run("summary", write(tmp_path, doc), "--json", "--depth", "1").stdout)["rows"]
    assert [(x["label"], x["params"]) for x in rows] == [("ids", 0), ("lm (3 nodes)", 800 + 2 * 72), ("head", 36)]
    rows = json.loads(run("summary", write(tmp_path, doc), "--json", "--depth", "2").stdout)["rows"]
    assert [x["label"] for x in rows] == ["ids", "lm.embed", "lm.mlp (x2)", "head"]


def test_summary_invalid_exits_2(tmp_path):
    assert run("summary", write(tmp_path, {"name": "x", "layers": [{"type": "Nope"}]})).exit_code == 2


# --- schema --------------------------------------------------------------------------------------------------------------
def test_schema_command():
    r = run("schema")
    assert r.exit_code == 0 and r.stdout == schema_text()
    assert json.loads(r.stdout)["$defs"]["Layer"]["properties"]["type"]["enum"]


# --- build ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_target(monkeypatch):
    calls = []

    def write(compiled, out, weights=False, seed=0):
        calls.append((compiled.report["name"], weights, seed))
        if compiled.report["name"] == "explode":
            (__import__("pathlib").Path(out) / "half.txt").write_text("partial")
            raise RuntimeError("writer failed")
        (__import__("pathlib").Path(out) / "model.py").write_text("# generated\n")

    monkeypatch.setitem(sys.modules, "omnic_fake_writer", types.SimpleNamespace(write=write))
    monkeypatch.setitem(build_mod.WRITERS, "torch", "omnic_fake_writer")
    return calls


def test_build_writes_and_replaces_atomically(tiny, tmp_path, fake_target):
    out = tmp_path / "out" / "model"
    r = run("build", tiny, "--target", "torch", "-o", out, "--weights", "--seed", "7")
    assert r.exit_code == 0, r.output
    assert fake_target == [("tiny", True, 7)]
    assert sorted(p.name for p in out.iterdir()) == [build_mod.MARKER, "model.py"]
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777   # not mkdtemp's 0700
    (out / "stale.txt").write_text("old")
    r = run("build", tiny, "--target", "torch", "-o", out)
    assert r.exit_code == 2 and "pass --force" in r.output and (out / "stale.txt").exists()
    assert run("build", tiny, "--target", "torch", "-o", out, "--force").exit_code == 0
    assert not (out / "stale.txt").exists()                      # replaced, not merged
    assert [p.name for p in out.parent.iterdir()] == ["model"]   # no temporary directories left


def test_build_failure_leaves_dir_untouched(tiny, tmp_path, fake_target, monkeypatch):
    out = tmp_path / "model"
    assert run("build", tiny, "--target", "torch", "-o", out).exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError):
        run("build", tiny, "--target", "torch", "-o", out, "--set", "name=explode", "--force")
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_refuses_foreign_directory(tiny, tmp_path, fake_target):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    r = run("build", tiny, "--target", "torch", "-o", out)
    assert r.exit_code == 2 and "refusing to replace" in r.output
    assert (out / "precious.txt").exists()


def test_build_missing_target_module(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(build_mod.WRITERS, "onnx", "omnic_no_such_module.emit")
    r = run("build", tiny, "--target", "onnx", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "target onnx needs `pip install -e " in r.output and "[onnx]'`" in r.output
    assert "omnic[onnx]" not in r.output          # `omnic` on PyPI is another project
    assert not (tmp_path / "o").exists()


def test_build_invalid_spec_exits_2(tmp_path, fake_target):
    r = run("build", write(tmp_path, {"name": "x", "layers": [{"type": "Nope"}]}), "--target", "torch",
            "-o", tmp_path / "o")
    assert r.exit_code == 2 and fake_target == [] and not (tmp_path / "o").exists()


# --- import-hf -----------------------------------------------------------------------------------------------------------
def test_import_hf(tmp_path):
    pytest.importorskip("compiler.importers.hf")
    cfg = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}
    out = tmp_path / "spec.json"
    r = run("import-hf", write(tmp_path, cfg, "config.json"), "-o", out)
    assert r.exit_code == 0, r.output
    # embedding + 2 x (q, k, v, o + SwiGLU + 2 norms) + final norm, tied head (hand count)
    assert compile(str(out)).report["params"]["total"] == 64000 + 2 * (2 * 4096 + 2 * 2048 + 3 * 8192 + 128) + 64
    r = run("import-hf", write(tmp_path, {"model_type": "no-such-model"}, "bad.json"), "-o", tmp_path / "x.json")
    assert r.exit_code == 2 and "unsupported model_type" in r.output and not (tmp_path / "x.json").exists()


# --- the README's example --------------------------------------------------------------------------------------------
def test_readme_example(tmp_path):
    import pathlib
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## A first spec\n\n```json\n(.*?)```", readme, re.S).group(1)
    spec = write(tmp_path, block, "tiny.json")
    r = run("check", spec)
    assert r.exit_code == 0, r.output
    assert "memory.inference[bf16] = " in r.stdout and "<= 256MiB: pass" in r.stdout
    # 32000 x 256 embedding (tied head) + 4 x (4 x 256^2 attention + 3 x 256 x 1024 SwiGLU + 2 x 256 norms) + 256
    assert compile(spec).report["params"]["total"] == 32000 * 256 + 4 * (4 * 256**2 + 3 * 256 * 1024 + 512) + 256
    assert "blocks (x4)" in run("summary", spec).stdout


def test_docs_cli_names_every_command_and_option():
    import pathlib
    import click as _click
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = []
    for name, cmd in cli.commands.items():
        if f"## `omnic {name}" not in doc:
            missing.append(f"section for `omnic {name}`")
        for p in cmd.params:
            if isinstance(p, _click.Option):
                for opt in p.opts:
                    if opt.startswith("--") and not re.search(re.escape(opt) + r"(?![\w-])", doc):
                        missing.append(f"omnic {name} {opt}")
    assert not missing, f"docs/cli.md does not document: {missing}"


def test_build_killed_midway_leaves_nothing(tiny, tmp_path):
    """SIGTERM during the writer: the temporary directory is removed and DIR never appears."""
    import signal
    import subprocess
    import time
    code = f"""
import os, sys, time, types
def write(compiled, out, **kw):
    open(os.path.join(out, "part"), "w").close()
    open({str(tmp_path / "ready")!r}, "w").close()
    time.sleep(60)
sys.modules["slow_writer"] = types.SimpleNamespace(write=write)
from compiler.emit import build
build.WRITERS["torch"] = "slow_writer"
from compiler.cli import main
main(["build", {tiny!r}, "--target", "torch", "-o", {str(tmp_path / "out")!r}])
"""
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "ready").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM, p.stderr.read()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ready", "spec.json"]
