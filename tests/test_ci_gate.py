"""The CI gate as another repository runs it: `omnic check DIR --budget ... --output ...` in a fresh interpreter with
torch and mlx import-blocked, over a folder of tiny specs (one over budget, components/ and non-spec JSON around).
Exit 1, the deciding figure on stdout, well-formed Markdown and JUnit; the pre-commit hook and the docs' job."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# the gate's interpreter: `import torch` / `import mlx` raise ImportError, then the omnic entry point runs
BLOCKED = ("import sys; sys.modules['torch'] = None; sys.modules['mlx'] = None; "
           "from compiler.cli import main; sys.argv[0] = 'omnic'; main()")


def lm(name: str, vocab: int, width: int, **extra) -> dict:
    return {"name": name, "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]}], "context": 32,
            "layers": [{"id": "embed", "type": "Embedding", "params": {"num_embeddings": vocab, "embedding_dim": width}},
                       {"id": "mlp", "type": "Linear", "params": {"out_features": width}, "repeat": 2},
                       {"id": "head", "type": "Linear", "params": {"out_features": vocab, "tie": "embed",
                                                                   "bias": False}}], **extra}


@pytest.fixture
def repo(tmp_path):
    """A consumer repository: specs/ with two small specs and one big one, a component, a schema, a package.json."""
    specs = tmp_path / "specs"
    (specs / "components").mkdir(parents=True)
    (specs / "vision").mkdir()
    (specs / "small.json").write_text(json.dumps(lm("small", 100, 16), indent=1))
    (specs / "vision" / "tiny.json").write_text(json.dumps(lm("tiny", 50, 8), indent=1))
    (specs / "big.json").write_text(json.dumps(lm("big", 50_000, 256), indent=1))      # 12.8 M params: ~25 MiB
    (specs / "components" / "block.json").write_text(json.dumps({"type": "Linear", "params": {"out_features": 8}}))
    (specs / "schema.json").write_text(json.dumps({"$schema": "http://json-schema.org/draft-07/schema#"}))
    (specs / "package.json").write_text(json.dumps({"name": "not-a-spec"}))
    return tmp_path


def gate(repo, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED, "check", *map(str, args)], cwd=repo, capture_output=True,
                          text=True, timeout=120)


def test_gate_over_budget_without_torch_or_mlx(repo):
    r = gate(repo, "specs", "--budget", "6MiB", "--output", "omnic.md", "--output", "omnic.xml")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    # the deciding figure, on stdout
    assert re.search(r"budget memory\.inference\[bf16\] = [\d.]+ MiB > 6MiB: FAIL \(over by [\d.]+ MiB", r.stdout)
    assert r.stdout.count(": pass (headroom") == 2
    assert "package.json" in r.stderr                      # skipped, and said so

    tree = ET.parse(repo / "omnic.xml")                   # well-formed, or this raises
    suite = tree.getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert sorted(cases) == ["specs/big.json", "specs/small.json", "specs/vision/tiny.json"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    fail = cases["specs/big.json"].find("failure")
    assert fail.get("type") == "budget" and "memory.inference[bf16] = " in fail.get("message")
    assert "> 6.00 MiB: FAIL" in fail.get("message")
    assert cases["specs/small.json"].find("failure") is None and cases["specs/small.json"].find("error") is None

    md = (repo / "omnic.md").read_text()
    assert md.startswith("### omnic check: 1 of 3 specs fails\n")
    rows = [l for l in md.splitlines() if l.startswith("| ")]
    assert len({l.count("|") - l.count("\\|") for l in rows}) == 1    # every row has the header's columns
    assert len(rows) == 1 + 3
    assert any("`specs/big.json`" in l and "**FAIL**: over by" in l for l in rows)
    assert "<details open>" in md and md.count("<details") == md.count("</details>")


def test_gate_passes_and_reports_invalid_specs(repo):
    r = gate(repo, "specs/small.json", "specs/vision", "--budget", "6GiB", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    (repo / "specs" / "broken.json").write_text('{"name": "broken", "layers": [{"type": "Linaer", "params": {}}]}')
    r = gate(repo, "specs", "--budget", "6GiB", "-q", "--output-format", "junit")
    assert r.returncode == 2
    root = ET.fromstring(r.stdout)                         # the document alone on stdout
    err = next(c for c in root.iter("testcase") if c.get("name") == "specs/broken.json").find("error")
    assert err.get("type") == "invalid-spec" and "unknown layer type 'Linaer'" in err.get("message")
    assert "did you mean 'Linear'" in err.text


def test_output_format_needs_a_known_extension(repo):
    r = gate(repo, "specs", "--output", "omnic.txt")
    assert r.returncode == 2 and "--output-format" in r.stderr


def test_pre_commit_hook():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "omnic-check" and hook["entry"] == "omnic check" and hook["pass_filenames"] is True
    assert re.search(hook["files"], "specs/a.json") and not re.search(hook["files"], "specs/a.py")
    assert re.search(hook["exclude"], "specs/components/block.json") and re.search(hook["exclude"], "schema.json")
    assert not re.search(hook["exclude"], "specs/small.json")


def test_docs_job_installs_the_core_only_and_runs_the_gate():
    text = (ROOT / "docs" / "ci-gate.md").read_text()
    job = yaml.safe_load(re.search(r"```yaml\n(name: omnic.*?)```", text, re.S).group(1))
    steps = [s.get("run", "") for s in job["jobs"]["omnic"]["steps"]]
    install = next(s for s in steps if "pip install" in s)
    assert "omnic" in install and not re.search(r"torch|mlx|omnic\[", install)
    assert any(s.lstrip().startswith("omnic check") and "--output" in s for s in steps)
