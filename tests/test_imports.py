"""Import hygiene: the runtimes depend on the compiler, never the reverse; no package has an import cycle; and each
side imports cleanly first (the reverse ordering works)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import networkx as nx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("compiler", "runtime_common", "runtime_torch", "runtime_mlx")
RUNTIMES = ("runtime_torch", "runtime_mlx")
#: the ONNX and GGUF emitters export a torch model's weights: clients of the torch runtime that live beside the other
#: emitters and are imported only by `omnic build --target onnx|onnx-decode|gguf`
RUNTIME_CLIENTS = {"compiler.emit.onnx", "compiler.emit.onnx_decode", "compiler.emit.gguf"}


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for d, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
    return out


def _imports(name: str, path: str, top_level: bool) -> set[str]:
    """The project modules `name` imports (at module level only, or anywhere)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    nodes = tree.body if top_level else list(ast.walk(tree))
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - n.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in n.names}
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}   # imported before it anyway
    return {m for m in out if m.split(".")[0] in PACKAGES and m not in ancestors}


def test_imports_have_no_cycle():
    """Counting imports inside functions too: a lazy import that closes a cycle (a kernel beside a whole-model pass
    that imports the ops using it) is a cycle all the same."""
    mods = _modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_edges_from((name, m) for m in _imports(name, path, False) if m in mods and m != name)
    cycles = {tuple(sorted(c)) for c in nx.simple_cycles(g)}
    assert not cycles, cycles


def test_the_compiler_never_imports_a_runtime():
    """Not at module level, not inside a function: `Compiled.to_torch()` looks the runtime up by name."""
    for name, path in _modules().items():
        if name.split(".")[0] == "compiler" and name not in RUNTIME_CLIENTS:
            bad = {m for m in _imports(name, path, False) if m.split(".")[0] in RUNTIMES}
            assert not bad, (name, bad)


def _run(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_compiling_imports_no_runtime_and_no_framework():
    _run("import sys, compiler\n"
         "c = compiler.compile('specs/omni_lite.json')\n"
         "assert c.ok\n"
         "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('runtime_torch', 'runtime_mlx', 'torch', 'mlx'))\n"
         "assert not bad, bad")


@pytest.mark.parametrize("first", ["runtime_torch", "runtime_torch.pack", "runtime_torch.ops.basic",
                                   "runtime_torch.kernels", "runtime_torch.generate", "runtime_common.decode"])
def test_a_runtime_module_imported_first(first):
    """Any runtime module may be the first import of a process; the compiler then builds through it."""
    _run(f"import {first}\nimport compiler\n"
         "from tests.op_examples import OP_EXAMPLES\n"
         "compiler.compile(OP_EXAMPLES['DecoderLM'][0]).to_torch()")


def test_mlx_runtime_imported_first():
    pytest.importorskip("mlx.core")
    _run("import runtime_mlx.ops.transformer\nimport compiler\n"
         "from tests.op_examples import OP_EXAMPLES\n"
         "compiler.compile(OP_EXAMPLES['DecoderLM'][0]).to_mlx()")


def _test_modules_imported(path: str) -> set[str]:
    """The tests/test_*.py modules a file imports, anywhere in it (`tests.test_x`, `test_x`, `from tests import
    test_x`, `from . import test_x`)."""
    out = set()
    for n in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            names = [base] + [f"{base}.{a.name}" if base else a.name for a in n.names]
        else:
            continue
        out |= {m.rpartition(".")[2] for m in names if m.rpartition(".")[2].startswith("test_")
                and m.rpartition(".")[0] in ("", "tests")}
    return out


def test_no_test_module_imports_another():
    """What several test modules share lives in helper modules (tests/hf_models.py, tests/tiny_specs.py,
    tests/shrink.py, ...), so a test module runs, and is read, alone."""
    tests = os.path.join(ROOT, "tests")
    found = {f: sorted(_test_modules_imported(os.path.join(tests, f)))
             for f in sorted(os.listdir(tests)) if f.startswith("test_") and f.endswith(".py")}
    assert {f: ms for f, ms in found.items() if ms} == {}


def test_the_test_import_check_sees_every_spelling(tmp_path):
    f = tmp_path / "test_probe.py"
    f.write_text("import os\nfrom tests.tiny_specs import LM\nfrom tests.test_cli import run\nimport test_quant\n"
                 "def f():\n    from tests import test_onnx, shrink\n    from . import test_pack\n")
    assert _test_modules_imported(str(f)) == {"test_cli", "test_quant", "test_onnx", "test_pack"}


#: what `omnic check` must not import: frameworks, numerics, and the libraries of other commands
CHECK_NEVER = ("torch", "mlx", "numpy", "jsonschema", "networkx", "onnx", "transformers", "safetensors", "xml",
               "yaml")


@pytest.mark.parametrize("spec, options, never", [("specs/oculus.json", ["--quiet"], CHECK_NEVER + ("rich",)),
                                                  ("examples/tiny_vlm.json", [], CHECK_NEVER)])
def test_check_imports_only_what_it_needs(spec, options, never):
    """`omnic check` as a process (start-up is import time): none of CHECK_NEVER is loaded; with --quiet (no tables)
    not rich either."""
    code = ("import sys, runpy\n"
            f"sys.argv = ['omnic', 'check', {spec!r}, *{options!r}]\n"
            "try:\n    runpy.run_module('compiler', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {never!r})\n"
            "print('LOADED', bad, code)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    last = out.stdout.strip().splitlines()[-1]
    assert last == "LOADED [] 0", (last, out.stderr[-2000:])


def test_check_imports_only_the_op_modules_its_spec_uses():
    """Ops are looked up module by module (registry.COMMON first): checking Oculus imports none of the modules of
    ops it does not use (fVLM, Mamba-2, MLA, the generative heads ...)."""
    code = ("import sys, compiler\n"
            "c = compiler.compile('specs/oculus.json')\n"
            "print('OPS', c.ok, sorted(m.split('.')[-1] for m in sys.modules if m.startswith('compiler.ops.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    last = out.stdout.strip().splitlines()[-1]
    loaded = set(ast.literal_eval(last.split(" ", 2)[2]))
    assert last.startswith("OPS True") and {"transformer", "vision", "merge"} <= loaded, (last, out.stderr[-2000:])
    assert not loaded & {"fvlm", "mamba2", "mla", "generative", "moe", "resampler", "lm"}, last


def test_every_op_is_found_by_name_from_a_fresh_registry():
    """registry.find imports modules one at a time until the name is registered: from a fresh process, every op
    (asked for in reverse order, so later modules come first) is found, an unknown name is None after all loaded."""
    code = ("from compiler import registry\n"
            "names = sorted(registry.all_ops())\n"
            "print(len(names), ','.join(names))\n")
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": ROOT}).stdout.split()[1].split(",")
    code = ("from compiler import registry\n"
            f"names = {names[::-1]!r}\n"
            "bad = [n for n in names if (registry.find(n) is None or registry.find(n).name != n)]\n"
            "print('BAD', bad, registry.find('NoSuchOp'), registry._pending())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.stdout.strip().splitlines()[-1] == "BAD [] None []", out.stdout + out.stderr[-2000:]
