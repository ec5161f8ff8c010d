"""Properties of `compile()` over random specs (hypothesis; the grammar is in tests/strategies.py).

  valid specs     compile without an error; every edge's producer type is what its consumer's shape rule sees and
                  reproduces the consumer's outputs; each layer's output has the kind and width the grammar predicts;
                  a dict, its JSON text and its file compile to the same report, twice over;
  JSON            json.dumps -> parse_text gives the same data, and every value's and key's location points at its
                  text (decoded independently with json.raw_decode);
  mutations       a damaged spec (key deleted, value retyped, garbage inserted, truncated, bytes swapped or flipped)
                  never crashes: compile() returns, every error is located, and `omnic check` exits 2 for it (never
                  3, never a traceback); arbitrary bytes and arbitrary JSON likewise;
  overrides       shrinking stacks and widths by override keeps a spec valid and never grows it.
The default run is small (`fast(n)`: n examples); HYPOTHESIS_PROFILE=long multiplies every count by 100.
"""
from __future__ import annotations

import json
import os
import tempfile

from click.testing import CliRunner
from hypothesis import given, note
from hypothesis import strategies as st

import compiler
from compiler import registry
from compiler.cli import cli
from compiler.source import parse_text

from strategies import Drawn, dumps_options, fast, json_values, mutated, specs

DECODER = json.JSONDecoder()


# --- helpers ----------------------------------------------------------------------------------------------------------
def same_json(a, b, ordered: bool = True) -> bool:
    """Equality that tells true from 1 and 1 from 1.0 (Python's == does not), and keys' order if `ordered`."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (list(a) == list(b) if ordered else set(a) == set(b)) and all(same_json(a[k], b[k], ordered)
                                                                             for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y, ordered) for x, y in zip(a, b))
    return a == b


def at(data, path):
    for p in path:
        data = data[p]
    return data


def offset(text: str, line: int, col: int) -> int:
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    return starts[line - 1] + col - 1


def check_locations(text: str, data) -> None:
    """Every value's location decodes (independently) to that value; every key's to that key."""
    src = parse_text(text, "x.json")
    assert same_json(src.data, json.loads(text))        # the document's order of keys, as Python's json keeps it
    assert same_json(src.data, data, ordered=False)
    for path, (line, col) in src.locs.items():
        value, _ = DECODER.raw_decode(text, offset(text, line, col))
        assert same_json(value, at(src.data, path)), (path, line, col)
    for path, (line, col) in src.key_locs.items():
        key, _ = DECODER.raw_decode(text, offset(text, line, col))
        assert key == path[-1], (path, line, col)
    n_values = 1 + sum(len(v) for v in _containers(data))
    assert len(src.locs) == n_values


def _containers(x):
    if isinstance(x, (dict, list)):
        yield x
        for v in (x.values() if isinstance(x, dict) else x):
            yield from _containers(v)


def layer_out(g, lid: str):
    """The output type of a layer: its own node, or the last node of its stack or composite."""
    names = [n for n in g.order if n == lid or n.startswith(lid + ".")]
    return g[names[-1]].out


def assert_located(c: compiler.Compiled, file: str | None) -> None:
    for d in c.errors:
        assert d.severity == "error"
        if file is not None:
            assert d.file, d.render()
        assert (d.line is not None and d.col is not None) or d.path, f"unlocated: {d.render()}"


def cli_check(path: str):
    r = CliRunner().invoke(cli, ["check", "-q", path])
    out = r.output
    assert "Traceback" not in out and "internal error" not in out, out
    assert r.exit_code != 3, out
    return r


# --- valid specs ------------------------------------------------------------------------------------------------------
@fast(40)
@given(specs())
def test_valid_specs_compile_without_errors_and_shapes_agree(drawn: Drawn):
    note(json.dumps(drawn.spec))
    c = compiler.compile(drawn.spec)
    assert c.ok, [d.render() for d in c.errors]
    assert c.report is not None and c.report["params"]["total"] >= 0
    g = c.graph
    pos = {n: i for i, n in enumerate(g.order)}
    for node in g.nodes():
        assert len(node.inputs) == len(node.inferred)
        if node.op == "Input":
            continue
        ins = []
        for src, out in node.inputs:
            assert src in g and out in g[src].outputs, (node.name, src, out)
            assert g.g.has_edge(src, node.name) and g.g.edges[src, node.name]["out"] == out
            assert pos[src] < pos[node.name], f"{src} comes after its consumer {node.name}"
            ins.append(g[src].outputs[out])
        assert set(g.g.predecessors(node.name)) == {s for s, _ in node.inputs}
        assert g.input_types(node) == ins
        op = registry.get(node.op)
        assert op.shape(node.params, ins) == node.outputs, node.name          # the consumer's rule on what it got
        want = op.in_width(node.params)
        assert want is None or not ins or ins[0].width in (None, want), (node.name, want, ins[0])
    for lid, ty in drawn.expected.items():
        out = layer_out(g, lid)
        assert out.kind == ty.kind, (lid, out, ty)
        if ty.width is not None:
            assert out.width == ty.width, (lid, out, ty)
        if ty.hw is not None:
            assert tuple(d.const for d in out.shape[2:]) == ty.hw, (lid, out, ty)
        if ty.kind == "tokens":
            assert (out.grid, out.prefix) == (ty.grid, ty.prefix), (lid, out.grid, out.prefix, ty)


@fast(15)
@given(specs())
def test_dict_text_and_file_compile_to_the_same_report(drawn: Drawn):
    text = json.dumps(drawn.spec, indent=2)
    a = compiler.compile(drawn.spec)
    b = compiler.compile(text)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "spec.json")
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        c = compiler.compile(p)
    again = compiler.compile(drawn.spec)
    dump = lambda x: json.dumps(x.report, sort_keys=True)  # noqa: E731
    assert dump(a) == dump(b) == dump(c) == dump(again)


# --- JSON -------------------------------------------------------------------------------------------------------------
@fast(60)
@given(json_values, dumps_options)
def test_dumps_then_parse_is_identity_with_exact_locations(value, opts):
    check_locations(json.dumps(value, **opts), value)


@fast(20)
@given(specs(), dumps_options)
def test_spec_text_parses_back_with_exact_locations(drawn: Drawn, opts):
    check_locations(json.dumps(drawn.spec, **opts), drawn.spec)


# --- mutations --------------------------------------------------------------------------------------------------------
def compile_bytes_everywhere(raw: bytes) -> compiler.Compiled:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "spec.json")
        with open(p, "wb") as f:
            f.write(raw)
        c = compiler.compile(p)
        assert_located(c, p)
        r = cli_check(p)
        if not c.ok:
            assert r.exit_code == 2, r.output
        else:
            assert r.exit_code in (0, 1), r.output
    return c


@fast(40)
@given(mutated())
def test_mutated_specs_never_crash_and_errors_are_located(raw: bytes):
    note(repr(raw[:2000]))
    compile_bytes_everywhere(raw)


@fast(20)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes):
    compile_bytes_everywhere(raw)


@fast(20)
@given(json_values)
def test_arbitrary_json_never_crashes(value):
    compile_bytes_everywhere(json.dumps(value).encode())


@fast(20)
@given(st.fixed_dictionaries({"name": st.text(max_size=5), "layers": st.lists(json_values, max_size=4)},
                             optional={"inputs": st.lists(json_values, max_size=2), "outputs": json_values,
                                       "budget": json_values, "expect": json_values, "stages": json_values}))
def test_spec_shaped_json_never_crashes(doc):
    c = compiler.compile(doc)
    assert_located(c, None)
    compile_bytes_everywhere(json.dumps(doc).encode())


# --- overrides --------------------------------------------------------------------------------------------------------
@fast(25)
@given(specs())
def test_shrinking_overrides_keep_specs_valid(drawn: Drawn):
    over = {}
    for layer in drawn.spec["layers"]:
        lid, p = layer["id"], layer["params"]
        if "repeat" in layer:
            over[f"{lid}.repeat"] = 1
        if "depth" in p:
            over[f"{lid}.depth"] = 1
        if "ff_dim" in p:
            over[f"{lid}.ff_dim"] = 1
        if "expert_dim" in p:
            over[f"{lid}.expert_dim"] = 1
            over[f"{lid}.num_experts"] = over[f"{lid}.top_k"] = 1
        if layer["type"] == "DecoderLM":
            over[f"{lid}.layers"] = 1
    note(over)
    full = compiler.compile(drawn.spec)
    small = compiler.compile(drawn.spec, overrides=over)
    assert small.ok, [d.render() for d in small.errors]
    assert small.report["params"]["total"] <= full.report["params"]["total"]
    assert small.report["flops"]["prefill"] <= full.report["flops"]["prefill"]
