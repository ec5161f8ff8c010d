"""`omnic check` as a gate in other repositories' CI: finding specs, and the Markdown / JUnit documents.

The check command builds one result per spec, the same objects `omnic check --json` prints (docs/report-format.md):
`{"file", "ok", "exit_code", "report", "diagnostics"}`. This module turns a list of them into
  * `markdown(results)`: a table for a pull-request comment, one row per spec, with the figure that decided;
  * `junit(results)`: JUnit XML, one testcase per spec: a <failure> (budget or expectation not met) whose message
    is the deciding figure, or an <error> (invalid spec) whose message is the first error;
  * `document(results, fmt)`: either of those, or the JSON array.
`find_specs(paths)` expands directories recursively into their spec files (see SKIP_DIRS / SKIP_FILES).
Pure functions of the results: no torch, no mlx, no rich. See docs/ci-gate.md.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional

from .diagnostics import Diagnostic
from .tables import budget_key, budget_line, expect_line, fmt_bytes, fmt_count

SKIP_DIRS = {"components", ".git", "node_modules", ".venv", "venv", "__pycache__"}   # includes and tooling
SKIP_FILES = {"schema.json"}
FORMATS = ("text", "markdown", "junit", "json")
EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".xml": "junit", ".json": "json"}
PASS, FAIL, INVALID = "pass", "fail", "invalid"


# --- finding specs ---------------------------------------------------------------------------------------------------
def looks_like_spec(path: str) -> bool:
    """A JSON file in a searched directory is a spec when it has a `layers` key (a cheap text test: tsconfig,
    package.json or a tokenizer are not specs; a spec with broken JSON still is, and is reported)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return '"layers"' in f.read()
    except OSError:
        return True


def find_specs(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """Files given are kept as they are; directories are searched recursively for *.json specs, in sorted order,
    skipping SKIP_DIRS and SKIP_FILES. Returns (specs, skipped JSON files that are not specs)."""
    specs: list[str] = []
    skipped: list[str] = []
    for p in paths:
        if not os.path.isdir(p):
            specs.append(p)
            continue
        found = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if not name.endswith(".json") or name in SKIP_FILES:
                    continue
                f = os.path.join(root, name)
                (found if looks_like_spec(f) else skipped).append(f)
        specs += sorted(found)
    return list(dict.fromkeys(specs)), skipped


def plan_outputs(outputs: tuple[str, ...], fmt: Optional[str]) -> list[tuple[Optional[str], str]]:
    """The documents to write, as (file, format); file None means stdout. Each file's format is `fmt` when given,
    else read from its extension; with no file, a `fmt` other than text goes to stdout."""
    if not outputs:
        return [(None, fmt)] if fmt and fmt != "text" else []
    if fmt == "text":
        raise ValueError("--output writes a document: --output-format markdown, junit or json")
    plan = []
    for out in outputs:
        ext = os.path.splitext(out)[1].lower()
        if not fmt and ext not in EXTENSIONS:
            raise ValueError(f"cannot tell the format of {out!r} from its extension ("
                             + ", ".join(EXTENSIONS) + "); pass --output-format markdown, junit or json")
        plan.append((out, fmt or EXTENSIONS[ext]))
    return plan


def write_text(path: str, text: str) -> None:
    """Write atomically: a reader (a CI step, an editor) never sees half a document."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# --- one result: status and the deciding figure ----------------------------------------------------------------------
def _diagnostic(d: dict) -> Diagnostic:
    return Diagnostic(d["severity"], d["message"], d.get("path") or "", d.get("file"), d.get("line"),
                      d.get("column"), d.get("hint"), d.get("code") or "")


def status(r: dict) -> str:
    return INVALID if r["exit_code"] == 2 else PASS if r["ok"] else FAIL


def deciding(r: dict) -> list[str]:
    """The lines that decided the verdict: the budget line (pass or fail), each unmet expectation; for an invalid
    spec its errors."""
    if status(r) == INVALID:
        return [_diagnostic(d).render().splitlines()[0] for d in r["diagnostics"] if d["severity"] == "error"] \
            or ["invalid spec"]
    rep = r["report"]
    lines = [f"expect {expect_line(e)}" for e in rep.get("expect") or [] if not e["ok"]]
    b = rep.get("budget")
    if b:
        line = f"budget {budget_line(b, rep)}"
        lines.insert(0 if b["verdict"] != "pass" else len(lines), line)
    elif not lines:
        lines.append("budget: none (no limit set; pass --budget 6GiB)")
    return lines


def _figures(rep: dict) -> tuple[str, str]:
    """(params 'total / active', memory figure) of a report, the memory figure being the budget's when set."""
    p = rep["params"]
    params = fmt_count(p["total"]) + (f" / {fmt_count(p['active'])} active" if p["active"] != p["total"] else "")
    b = rep.get("budget")
    if b:
        return params, f"{budget_key(b)} = {fmt_bytes(b['figure'])}"
    fmt = rep["settings"]["format"]
    return params, f"memory.inference[{fmt}] = {fmt_bytes(rep['memory']['inference'][fmt])}"


# --- Markdown --------------------------------------------------------------------------------------------------------
_ICON = {PASS: "✅", FAIL: "❌", INVALID: "⚠️"}


def _cell(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(results: list[dict]) -> str:
    n = len(results)
    bad = [r for r in results if status(r) != PASS]
    head = (f"### omnic check: {len(bad)} of {n} spec{'s' if n != 1 else ''} "
            f"{'fail' if len(bad) != 1 else 'fails'}" if bad else
            f"### omnic check: {'all ' if n > 1 else ''}{n} spec{'s' if n != 1 else ''} pass")
    lines = [head, "", "| | spec | model | params | memory | budget | verdict |", "|:-:|---|---|--:|--:|--:|---|"]
    for r in results:
        st = status(r)
        if st == INVALID:
            errs = [d for d in r["diagnostics"] if d["severity"] == "error"]
            lines.append(f"| {_ICON[st]} | `{_cell(r['file'])}` | | | | | **invalid**: "
                         f"{len(errs)} error{'s' if len(errs) != 1 else ''} |")
            continue
        rep = r["report"]
        params, mem = _figures(rep)
        b = rep.get("budget")
        limit = fmt_bytes(b["limit"]) if b else "none"
        if st == PASS:
            verdict = f"pass, headroom {fmt_bytes(b['headroom'])}" if b else "pass"
        elif b and b["verdict"] != "pass":
            verdict = f"**FAIL**: over by {fmt_bytes(-b['headroom'])}"
        else:
            verdict = "**FAIL**: " + ", ".join(e["key"] for e in rep["expect"] if not e["ok"]) + " off its claim"
        lines.append(f"| {_ICON[st]} | `{_cell(r['file'])}` | {_cell(rep['name'])} | {params} | {mem} | {limit} "
                     f"| {verdict} |")
    if bad:
        lines += ["", "<details open><summary>What decided</summary>", ""]
        for r in bad:
            lines.append(f"- `{_cell(r['file'])}`")
            lines += [f"  - `{x}`" for x in deciding(r)]
        lines += ["", "</details>"]
    if any(r["report"] for r in results):
        lines += ["", "<sub>omnic: GiB = 2^30 bytes; inference memory = weights + KV cache + activation peak at each "
                      "spec's batch and context. Reproduce locally with `omnic check FILE`.</sub>"]
    return "\n".join(lines) + "\n"


# --- JUnit XML -------------------------------------------------------------------------------------------------------
def junit(results: list[dict], suite: str = "omnic check") -> str:
    import xml.etree.ElementTree as ET          # here: `omnic check` without --output-format junit needs no XML
    fails = sum(status(r) == FAIL for r in results)
    errors = sum(status(r) == INVALID for r in results)
    root = ET.Element("testsuites", name=suite, tests=str(len(results)), failures=str(fails), errors=str(errors))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)), failures=str(fails),
                       errors=str(errors), skipped="0")
    for r in results:
        st = status(r)
        rep = r["report"]
        tc = ET.SubElement(ts, "testcase", classname="omnic.check", name=r["file"])
        lines = deciding(r)
        if st == INVALID:
            el = ET.SubElement(tc, "error", type="invalid-spec", message=lines[0])
            el.text = "\n".join(_diagnostic(d).render() for d in r["diagnostics"] if d["severity"] == "error")
            continue
        if st == FAIL:
            b = rep.get("budget")
            kind = "budget" if b and b["verdict"] != "pass" else "expectation"
            el = ET.SubElement(tc, "failure", type=kind, message=lines[0])
            el.text = "\n".join(lines)
        params, mem = _figures(rep)
        ET.SubElement(tc, "system-out").text = "\n".join([f"{rep['name']}: params {params}; {mem}"] + lines)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def document(results: list[dict], fmt: str, dump_json=None) -> str:
    """The document of `fmt` (markdown, junit or json); `dump_json` is the CLI's stable JSON writer."""
    if fmt == "markdown":
        return markdown(results)
    if fmt == "junit":
        return junit(results)
    if fmt == "json":
        return (dump_json or (lambda x: json.dumps(x, indent=2, sort_keys=True)))(results) + "\n"
    raise ValueError(f"unknown output format {fmt!r}; formats: {', '.join(FORMATS[1:])}")
