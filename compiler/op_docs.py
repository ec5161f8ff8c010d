"""The layer-type reference, generated from the op registry: `omnic ops [TYPE]` and `docs/ops.md`.

For each op: how a spec spells it (`"type": "GQA_MoE_Layer"`, or `TransformerBlock` with `params.type`), its
description (the op's `doc`), its params (type, default or "required", description: the pydantic fields the JSON
Schema is generated from), its inputs (slots: the tensor kinds each takes) and its outputs. `docs/ops.md` adds a
minimal spec per op from `tests/op_examples.py` (the tiny specs the runtime tests build and run), written by
`scripts/ops_doc.py` and kept in sync by a test.
"""
from __future__ import annotations

import json
import re
from typing import Any, Optional

from pydantic_core import PydanticUndefined

from . import registry

KIND_WORDS = {"tokens": "tokens (B, N, D)", "image": "feature map (B, C, H, W)", "video": "video (B, F, C, H, W)",
              "ids": "token ids (B, T)", "vector": "vector (B, D)", "scalar": "scalar (B,)"}


def _type(annotation: Any) -> str:
    t = str(annotation)
    t = re.sub(r"<class '([\w.]+)'>", r"\1", t)
    t = re.sub(r"\b(typing|builtins|compiler\.[\w.]+)\.", "", t)
    m = re.fullmatch(r"Optional\[(.*)\]", t)
    t = m.group(1) if m else t
    return t.replace("NoneType", "null")


def _default(field) -> str:
    if field.is_required():
        return "required"
    d = field.default
    if d is PydanticUndefined:
        return "(computed)"
    if d is None:
        return "inferred" if "infer" in (field.description or "").lower() else "none"
    if hasattr(d, "model_dump"):
        d = d.model_dump()
    return json.dumps(d)


def params(op) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of each param, `note` last."""
    rows = [(f.alias or n, _type(f.annotation), _default(f), (f.description or "").strip())
            for n, f in op.Params.model_fields.items()]
    return [r for r in rows if r[0] != "note"] + [r for r in rows if r[0] == "note"]


def spelling(op) -> str:
    if op.kind_of:
        return f'"type": "{op.kind_of}", "params": {{"type": "{op.name}", ...}}  (or "type": "{op.name}")'
    return f'"type": "{op.name}"'


def inputs(op) -> list[str]:
    out = []
    for s in op.slots:
        kinds = " or ".join(KIND_WORDS.get(k, k) for k in s.kinds)
        flags = ", optional" if s.optional else ""
        flags += ", one or more" if s.variadic else ""
        out.append(f"{s.name}: {kinds}{flags}")
    return out


def ops() -> dict[str, Any]:
    return {n: op for n, op in registry.all_ops().items() if n != "Input"}


def find(name: str) -> Optional[Any]:
    """The op called `name`, case-insensitively."""
    all_ = ops()
    return all_.get(name) or next((op for n, op in all_.items() if n.lower() == name.lower()), None)


def text(op) -> str:
    """The plain-text page of one op (`omnic ops TYPE`)."""
    lines = [op.name, "=" * len(op.name), "", f"spelled: {spelling(op)}", "", op.doc.strip(), "", "params:"]
    rows = params(op)
    w = max(len(r[0]) for r in rows)
    for name, typ, default, desc in rows:
        lines.append(f"  {name:<{w}}  {typ}, {default}" + (f": {desc}" if desc else ""))
    lines += ["", "inputs:"] + [f"  {i}" for i in inputs(op) or ["(none)"]]
    lines += ["", "outputs: " + ", ".join(op.outputs)]
    return "\n".join(lines) + "\n"


def index() -> str:
    """One line per op (`omnic ops`)."""
    all_ = ops()
    w = max(map(len, all_))
    return "".join(f"{n:<{w}}  {(op.doc.strip().splitlines() or [''])[0].removeprefix(n + ': ')}\n"
                   for n, op in all_.items())


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown(examples: Optional[dict] = None) -> str:
    """docs/ops.md: the index, then one section per op; `examples` maps op names to a tiny spec (or a list)."""
    all_ = ops()
    out = ["# Layer types", "",
           "Generated from the op registry by `scripts/ops_doc.py` (do not edit; a test keeps it in sync). "
           "`omnic ops TYPE` prints the same page in a terminal; `omnic schema` is the JSON Schema.", "",
           "| type | what it is |", "|---|---|"]
    for n, op in all_.items():
        first = (op.doc.strip().splitlines() or [""])[0].removeprefix(n + ": ")
        out.append(f"| [`{n}`](#{n.lower()}) | {_cell(first)} |")
    for n, op in all_.items():
        out += ["", f"## {n}", "", f"Spelled `{spelling(op)}`.", "", op.doc.strip(), "",
                "| param | type | default | description |", "|---|---|---|---|"]
        out += [f"| `{a}` | `{_cell(b)}` | {_cell(c)} | {_cell(d)} |" for a, b, c, d in params(op)]
        out += ["", "Inputs: " + ("; ".join(inputs(op)) or "none") + ". Outputs: " + ", ".join(op.outputs) + "."]
        ex = (examples or {}).get(n)
        if ex:
            ex = ex[0] if isinstance(ex, list) else ex
            out += ["", "Minimal spec:", "", "```json", json.dumps(ex, indent=1), "```"]
    return "\n".join(out) + "\n"
