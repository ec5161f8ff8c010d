"""`omnic ops [TYPE]` and docs/ops.md: generated from the registry, every op and every param present, the file in
sync with the generator, each shown minimal spec compiles and contains its op."""
from __future__ import annotations

import json
import pathlib
import re

import pytest
from click.testing import CliRunner

from compiler import compile, registry
from compiler.cli import cli
from compiler.op_docs import markdown
from tests.op_examples import OP_EXAMPLES

ROOT = pathlib.Path(__file__).resolve().parent.parent
OPS = [n for n in registry.all_ops() if n != "Input"]


def test_docs_ops_md_is_in_sync():
    assert (ROOT / "docs" / "ops.md").read_text(encoding="utf-8") == markdown(OP_EXAMPLES), \
        "docs/ops.md is stale: run python scripts/ops_doc.py"


@pytest.mark.parametrize("name", OPS)
def test_ops_page_lists_every_param_input_and_output(name):
    op = registry.get(name)
    r = CliRunner().invoke(cli, ["ops", name.lower()])
    assert r.exit_code == 0
    for fname, f in op.Params.model_fields.items():
        assert re.search(rf"^  {re.escape(f.alias or fname)} ", r.output, re.M), (fname, r.output)
    for s in op.slots:
        assert f"  {s.name}: " in r.output
    assert "outputs: " + ", ".join(op.outputs) in r.output
    assert f"## {name}\n" in markdown()


@pytest.mark.parametrize("name", [n for n in OPS if n in OP_EXAMPLES])
def test_the_minimal_spec_shown_compiles_and_uses_its_op(name):
    section = markdown(OP_EXAMPLES).split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
    doc = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    c = compile(doc)
    assert c.ok, [d.render() for d in c.errors]
    assert any(n.op == name for n in c.graph.nodes()) or registry.get(name).composite and \
        any(layer["type"] == name for layer in doc["layers"])          # a composite expands into other nodes


def test_ops_index_and_unknown_type():
    r = CliRunner().invoke(cli, ["ops"])
    assert r.exit_code == 0 and [line.split()[0] for line in r.output.splitlines()] == OPS
    r = CliRunner().invoke(cli, ["ops", "Transformerblok"])
    assert r.exit_code == 2 and "did you mean 'TransformerBlock'?" in r.output
