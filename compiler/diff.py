"""`omnic diff A B`: what changed between two compiled specs, as one stable JSON document and as tables.

`diff(a, b)` compares two valid `Compiled`s (docs/ci-gate.md, "omnic diff --json", lists every key):
  * structure: layers matched by node name, repeated blocks collapsed into one row per repeat group (as in
    `omnic summary`); a row is added, removed or changed (type, number of copies, parameter count, output shape,
    the rows it reads from, and each layer parameter that differs over the copies both sides have; a parameter
    that differs between the copies of a group is shown as the list over those copies). Notes are not compared;
  * figures: params (total / active / trainable / frozen), FLOPs (prefill / decode per token / train step),
    memory (weights and inference per storage format, training total per stage), each as
    {"a", "b", "delta" = b - a, "relative" = delta / a (null when a is 0 or a side lacks the figure)};
  * budget verdicts and expectations of each side, and the settings each side was computed at.
Layers are matched by name, so give layers ids: without them a layer inserted early renames every later one.
"""
from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any, Optional

from . import cost
from .tables import fmt_bytes, fmt_count, fmt_flops

DIFF_VERSION = 1
ADDED, REMOVED, CHANGED = "added", "removed", "changed"


# --- structure -------------------------------------------------------------------------------------------------------
def _shape(t) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def rows(compiled) -> dict[str, dict]:
    """Rows of a compiled graph, in order: one per node, the nodes of a repeat group in one row (key: the group)."""
    g, s = compiled.graph, compiled.settings
    count = {c.name: c.params for c in cost.cost_nodes(g, s["batch"], s["context"], s["frames"])}
    out: dict[str, dict] = {}
    row_of = {n.name: n.group or n.name for n in g.nodes()}
    for n in g.nodes():
        key = row_of[n.name]
        r = out.setdefault(key, {"ops": [], "copies": 0, "params": 0, "configs": [], "inputs": set()})
        r["ops"].append(n.op)
        r["copies"] += 1
        r["params"] += count[n.name]
        r["configs"].append({k: v for k, v in n.params.model_dump(mode="json").items() if k != "note"})
        r["inputs"] |= {row_of[src] for src, _ in n.inputs if row_of[src] != key}
        r["shape"] = "; ".join(_shape(t) if k == "out" else f"{k}: {_shape(t)}" for k, t in n.outputs.items())
    for r in out.values():
        ops = list(dict.fromkeys(r.pop("ops")))
        r["type"] = ops[0] if len(ops) == 1 else "/".join(ops)
        r["inputs"] = sorted(r["inputs"])
    return out


def _over_copies(configs: list[dict], key: str) -> Any:
    """A parameter's value over a group's copies: the value when all agree, else the list of values."""
    vals = [c.get(key) for c in configs]
    return vals[0] if all(v == vals[0] for v in vals) else vals


def _merged_order(ka: list[str], kb: list[str]) -> list[str]:
    """Row keys of both sides in one order: B's, with rows only in A placed where A had them."""
    out: list[str] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
        out += ka[i1:i2] if tag == "delete" else kb[j1:j2] if tag in ("equal", "insert") else ka[i1:i2] + kb[j1:j2]
    return list(dict.fromkeys(out))


def _pair(x: Any, y: Any) -> dict:
    return {"a": x, "b": y}


def structure(ra: dict[str, dict], rb: dict[str, dict]) -> list[dict]:
    changes = []
    for key in _merged_order(list(ra), list(rb)):
        a, b = ra.get(key), rb.get(key)
        if a is None or b is None:
            r = a or b
            changes.append({"name": key, "change": REMOVED if b is None else ADDED, "type": r["type"],
                            "copies": r["copies"], "param_count": r["params"], "shape": r["shape"]})
            continue
        what: dict[str, Any] = {}
        for field, ka in (("type", "type"), ("copies", "copies"), ("param_count", "params"), ("shape", "shape"),
                          ("inputs", "inputs")):
            if a[ka] != b[ka]:
                what[field] = _pair(a[ka], b[ka])
        params = {}
        n = min(a["copies"], b["copies"])   # copies present on both sides (the others are in "copies")
        for p in sorted(set().union(*a["configs"], *b["configs"])):
            va, vb = _over_copies(a["configs"][:n], p), _over_copies(b["configs"][:n], p)
            if va != vb:
                params[p] = _pair(va, vb)
        if what or params:
            changes.append({"name": key, "change": CHANGED, "type": b["type"], "copies": b["copies"],
                            "differences": what, "params": params})
    return changes


# --- figures ---------------------------------------------------------------------------------------------------------
def figure(x: Optional[float], y: Optional[float]) -> dict:
    if x is None or y is None:
        return {"a": x, "b": y, "delta": None, "relative": None}
    d = y - x
    return {"a": x, "b": y, "delta": d, "relative": round(d / x, 6) if x else None}


def figures(ra: dict, rb: dict) -> dict[str, Any]:
    ma, mb = ra["memory"], rb["memory"]
    stages = list(dict.fromkeys([*ma["training"], *mb["training"]]))
    return {
        "params": {k: figure(ra["params"][k], rb["params"][k]) for k in ("total", "active", "trainable", "frozen")},
        "flops": {k: figure(ra["flops"][k], rb["flops"][k]) for k in ("prefill", "decode_per_token", "train_step")},
        "memory": {
            "weights": {f: figure(ma["weights"][f], mb["weights"][f]) for f in ma["weights"]},
            "inference": {f: figure(ma["inference"][f], mb["inference"][f]) for f in ma["inference"]},
            "training": {st: figure(ma["training"].get(st, {}).get("total"), mb["training"].get(st, {}).get("total"))
                         for st in stages},
        },
    }


def diff(a, b, files: tuple[Optional[str], Optional[str]] = (None, None)) -> dict[str, Any]:
    """The diff document of two valid `Compiled`s (see the module docstring)."""
    ra, rb = a.report, b.report
    changes = structure(rows(a), rows(b))
    keys = list(dict.fromkeys([e["key"] for e in ra["expect"]] + [e["key"] for e in rb["expect"]]))
    ea, eb = {e["key"]: e for e in ra["expect"]}, {e["key"]: e for e in rb["expect"]}
    ba, bb = ra.get("budget"), rb.get("budget")
    return {
        "omnic_diff": DIFF_VERSION,
        "a": {"file": files[0], "name": ra["name"], "settings": ra["settings"]},
        "b": {"file": files[1], "name": rb["name"], "settings": rb["settings"]},
        "same_settings": ra["settings"] == rb["settings"],
        "summary": {k: sum(c["change"] == k for c in changes) for k in (ADDED, REMOVED, CHANGED)},
        "structure": changes,
        **figures(ra, rb),
        "budget": {"a": ba, "b": bb,
                   "verdict_changed": (ba or {}).get("verdict") != (bb or {}).get("verdict")},
        "expect": [{"key": k, "a": _expect(ea.get(k)), "b": _expect(eb.get(k))} for k in keys],
    }


def _expect(e: Optional[dict]) -> Optional[dict]:
    return None if e is None else {k: e[k] for k in ("claimed", "computed", "relative_difference", "ok")}


# --- tables ----------------------------------------------------------------------------------------------------------
def _val(v: Any) -> str:
    if isinstance(v, list) and len(v) > 6:
        return f"[{', '.join(map(str, v[:3]))}, ... ({len(v)} copies)]"
    return "null" if v is None else str(v)


def _change_text(c: dict) -> str:
    if c["change"] != CHANGED:
        return f"{c['shape']}, {fmt_count(c['param_count'])} params"
    parts = []
    diffs = c["differences"]
    for field in ("type", "copies", "shape", "inputs"):
        if field in diffs:
            parts.append(f"{field} {_val(diffs[field]['a'])} -> {_val(diffs[field]['b'])}")
    if "param_count" in diffs:
        parts.append(f"params {fmt_count(diffs['param_count']['a'])} -> {fmt_count(diffs['param_count']['b'])}")
    copies = diffs.get("copies")
    for p, v in c["params"].items():     # each fact once: an Input's `shape` is its output shape, `depth` its copies
        if p == "shape" and "shape" in diffs or copies and (v["a"], v["b"]) == (copies["a"], copies["b"]):
            continue
        parts.append(f"{p} {_val(v['a'])} -> {_val(v['b'])}")
    return "; ".join(parts)


def _fig_row(label: str, f: dict, fmt) -> list[str]:
    if f["delta"] is None:
        return [label, "-" if f["a"] is None else fmt(f["a"]), "-" if f["b"] is None else fmt(f["b"]), "", ""]
    sign = "+" if f["delta"] > 0 else "-" if f["delta"] < 0 else ""
    rel = "" if f["relative"] is None else f"{f['relative']:+.1%}"
    return [label, fmt(f["a"]), fmt(f["b"]), (sign + fmt(abs(f["delta"]))) if f["delta"] else "0", rel]


def tables(d: dict) -> list:
    """What `omnic diff` prints: the structure changes, the figures, the memory and the budget verdicts."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def table(title: str, *cols: str, left: int = 1):
        t = Table(header_style="bold")
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i < left else "right", no_wrap=i < len(cols) - 1 or left == 1)
        return t, Group(Text(title, style="bold"), t)

    a, b = d["a"], d["b"]
    out = [Text(f"A: {a['name']} ({a['file']})\nB: {b['name']} ({b['file']})")]
    if not d["same_settings"]:
        out.append(Text(f"note: figures at different settings: A {a['settings']}, B {b['settings']}",
                        style="yellow"))
    s = d["summary"]
    if d["structure"]:
        t, g = table(f"structure: {s['added']} added, {s['removed']} removed, {s['changed']} changed "
                     "(repeated layers as one row)", "", "layer", "type", "what changed", left=4)
        for c in d["structure"]:
            mark = {ADDED: "+", REMOVED: "-", CHANGED: "~"}[c["change"]]
            name = c["name"] + (f" x{c['copies']}" if c["copies"] > 1 else "")
            t.add_row(mark, name, c["type"], _change_text(c))
        out.append(g)
    else:
        out.append(Text("structure: no layer changed"))
    t, g = table("figures", "", "A", "B", "delta", "%")
    for k, f in d["params"].items():
        t.add_row(*_fig_row(f"params {k}", f, fmt_count))
    for k, f in d["flops"].items():
        t.add_row(*_fig_row(f"FLOPs {k.replace('_', ' ')}", f, fmt_flops))
    out.append(g)
    t, g = table("memory (inference = weights + decode state + activation peak; training = AdamW total)",
                 "", "A", "B", "delta", "%")
    for k, f in d["memory"]["inference"].items():
        t.add_row(*_fig_row(f"inference {k}", f, fmt_bytes))
    for k, f in d["memory"]["training"].items():
        t.add_row(*_fig_row(f"training {k}", f, fmt_bytes))
    out.append(g)
    lines = []
    if d["budget"]["verdict_changed"]:
        va, vb = ((d["budget"][x] or {}).get("verdict", "none") for x in ("a", "b"))
        lines.append(f"budget verdict changed: {va} -> {vb}")
    for side in ("a", "b"):
        bud = d["budget"][side]
        lines.append(f"budget {side.upper()}: " + ("none" if bud is None else
                     f"{bud['what']} = {fmt_bytes(bud['figure'])} vs {fmt_bytes(bud['limit'])}: {bud['verdict']}"))
    verdict = {None: "-", True: "ok", False: "FAIL"}
    for e in d["expect"]:
        va, vb = (verdict[e[x] and e[x]["ok"]] for x in ("a", "b"))
        lines.append(f"expect {e['key']}: A {va}, B {vb}")
    out.append(Text("\n".join(lines)))
    return out
