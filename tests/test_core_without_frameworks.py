"""The compiler core (compile, the `omnic` check / summary / schema commands) works without torch or mlx, and
never imports them: checked in fresh interpreters, one with imports of torch and mlx blocked, one watching
`sys.modules`."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = {
    "name": "tiny",
    "inputs": [{"name": "ids", "kind": "ids", "shape": ["B", "T"]}],
    "layers": [
        {"id": "embed", "type": "Embedding", "params": {"num_embeddings": 100, "embedding_dim": 8}},
        {"id": "mlp", "type": "Linear", "params": {"out_features": 8}, "repeat": 2},
        {"id": "head", "type": "Linear", "params": {"out_features": 100, "tie": "embed", "bias": False}},
    ],
    "budget": {"vram": "1MiB"},
}
FRAMEWORKS = ("torch", "mlx", "transformers", "onnx", "safetensors", "numpy")


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(spec)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_compile_and_cli_with_frameworks_blocked(tmp_path):
    r = run_python("""
        import sys
        for m in ("torch", "mlx"):
            sys.modules[m] = None           # any `import torch` / `import mlx` now raises ImportError
        spec = sys.argv[1]
        import compiler
        c = compiler.compile(spec)
        assert c.ok, [d.render() for d in c.diagnostics]
        assert c.report["params"]["total"] == 100 * 8 + 2 * 72
        from compiler.cli import main
        for argv in (["check", spec], ["check", spec, "--json"], ["summary", spec], ["schema"],
                     ["build", spec, "--target", "torch", "-o", spec + ".out"]):
            try:
                main(argv)
            except SystemExit as e:
                print("EXIT", argv[0], e.code, file=sys.stderr)
    """, tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    exits = [line.split()[1:] for line in r.stderr.splitlines() if line.startswith("EXIT")]
    assert exits == [["check", "0"], ["check", "0"], ["summary", "0"], ["schema", "0"], ["build", "2"]], r.stderr
    assert "target torch needs `pip install -e " in r.stderr and "[torch]'`" in r.stderr
    assert "omnic[torch]" not in r.stderr         # `omnic` on PyPI is another project


def test_core_never_imports_frameworks(tmp_path):
    r = run_python(f"""
        import sys
        spec = sys.argv[1]
        import compiler
        compiler.compile(spec, with_nodes=True)
        from compiler.cli import main
        for argv in (["check", spec], ["summary", spec], ["schema"]):
            try:
                main(argv)
            except SystemExit as e:
                assert e.code == 0, (argv, e.code)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
        print("LOADED", loaded, file=sys.stderr)
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stderr, r.stderr


def test_python_dash_m_compiler():
    r = subprocess.run([sys.executable, "-m", "compiler", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "check" in r.stdout and "build" in r.stdout
