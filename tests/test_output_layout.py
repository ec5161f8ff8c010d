"""What people read: the summary on narrow terminals (80 and 100 columns: nothing past the edge, no type name cut in
two), tied heads as `tied → embed`, the "connected to" column of `summary -v`, `check -q` over a folder (each verdict
line names its spec, a count at the end), coloured verdicts on a terminal, `omnic diff` saying each fact once."""
from __future__ import annotations

import io
import pathlib
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from compiler import compile
from compiler.cli import cli
from compiler.tables import summary_rows, summary_table

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in (ROOT / "specs").rglob("*.json") if "components" not in p.parts and p.name != "schema.json")


def render(rep, width, **kw) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, markup=False, highlight=False, emoji=False).print(
        summary_table(rep, summary_rows(rep), width, **kw))
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_summary_fits_a_narrow_terminal(path, width):
    rep = compile(str(path), with_nodes=True).report
    text = render(rep, width)
    assert max(len(line) for line in text.splitlines()) <= width
    body = text.split("───", 1)[1]
    for r in summary_rows(rep):                    # each type name whole, in the row's first line
        assert re.search(rf"\s{re.escape(r.type)}\s", body), (r.type, text)
    total = next(line for line in text.splitlines() if line.strip().startswith("total"))
    assert total.rstrip().split()[-1].endswith(("FLOP", "B", "iB"))   # the last figure is not cut off


def test_tied_head_names_its_owner():
    rep = compile(str(ROOT / "specs/nanovlm/original_small.json"), with_nodes=True).report
    wide = render(rep, 200)
    head = next(line for line in wide.splitlines() if "decoder.head" in line)
    assert re.search(r"tied (→|->) decoder\.token_embedding", head)
    assert re.search(r"tied (→|->) token_embedding", render(rep, 80))


def test_summary_verbose_has_connected_to():
    r = CliRunner().invoke(cli, ["summary", str(ROOT / "specs/nanovlm/original_small.json"), "-v"])
    assert r.exit_code == 0 and "connected to" in r.stdout
    head = next(line for line in r.stdout.splitlines() if "│ decoder.head " in line)
    assert "│ decoder.norm " in head
    merge = next(line for line in r.stdout.splitlines() if "│ merge " in line)
    assert "decoder.token_embedding, MP.proj, input_ids" in merge


def test_check_quiet_over_a_folder_names_each_spec_and_counts(tmp_path):
    r = CliRunner().invoke(cli, ["check", "-q", str(ROOT / "specs")])
    lines = r.stdout.splitlines()
    assert len(lines) == len(SPECS) + 1
    assert sorted(line.split(": ", 1)[0] for line in lines[:-1]) == sorted(str(p) for p in SPECS)
    assert lines[-1] == f"{len(SPECS)} specs: {len(SPECS)} pass, 0 FAIL, 0 invalid"


def test_verdicts_are_coloured_on_a_terminal():
    spec = str(ROOT / "specs/oculus.json")
    plain = CliRunner().invoke(cli, ["check", "-q", spec]).stdout
    coloured = CliRunner().invoke(cli, ["check", "-q", spec], color=True).stdout
    assert "\x1b[" not in plain and ": pass (" in plain
    assert "\x1b[32m" in coloured and "pass\x1b[0m" in coloured
    over = CliRunner().invoke(cli, ["check", "-q", spec, "--budget", "1GiB"], color=True).stdout
    assert "\x1b[31m" in over and "FAIL\x1b[0m" in over


def test_diff_says_each_fact_once():
    r = CliRunner().invoke(cli, ["diff", str(ROOT / "specs/nanovlm/original_small.json"),
                                 str(ROOT / "specs/nanovlm/default.json")])
    image = next(line for line in r.stdout.splitlines() if "│ image " in line)
    assert image.count("shape") == 1 and "['B'" not in image
    blocks = "".join(line for line in r.stdout.splitlines() if "decoder.blocks" in line or "│   │" in line)
    assert "copies 30 -> 32" in blocks and "depth 30 -> 32" not in blocks
