"""Rendering reports for people: number formatting, the `omnic check` tables, the `omnic summary` rows.

Pure functions of the report dict (see docs/report-format.md); the CLI prints what they return. Units: parameter
counts and FLOPs in SI steps (K, M, B / G, T), bytes in binary steps (KiB, MiB, GiB: 2**10, 2**20, 2**30).
rich is imported by the functions that build tables, so `compiler` itself stays light.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


# --- numbers ---------------------------------------------------------------------------------------------------------
def fmt_count(n: float) -> str:
    """Parameters: 1234 -> '1.23 K', 2.51e9 -> '2.51 B'."""
    return _si(n, ["", " K", " M", " B", " T"])


def fmt_flops(n: float) -> str:
    """FLOPs: 3.2e12 -> '3.20 TFLOP'."""
    return _si(n, [" FLOP", " KFLOP", " MFLOP", " GFLOP", " TFLOP", " PFLOP", " EFLOP"])


def _si(n: float, units: list[str]) -> str:
    n = float(n)
    k = 0
    while abs(n) >= 1000 and k < len(units) - 1:
        n /= 1000
        k += 1
    if k == 0:
        return f"{n:,.0f}{units[0]}"
    return f"{n:.2f}{units[k]}" if abs(n) < 100 else f"{n:.1f}{units[k]}"


def fmt_bytes(n: float) -> str:
    """Bytes in binary units: 4.42e9 -> '4.12 GiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def fmt_figure(key: str, v: float) -> str:
    """A figure named by an expectation / budget key, in its unit."""
    if key.startswith("params"):
        return fmt_count(v)
    if key.startswith("flops"):
        return fmt_flops(v)
    return fmt_bytes(v)


def fmt_shape(t: dict) -> str:
    return "(" + ", ".join(str(d) for d in t["shape"]) + ")"


# --- verdicts --------------------------------------------------------------------------------------------------------
def budget_key(b: dict) -> str:
    """The report figure a budget is checked against, e.g. 'memory.inference[nf4]'."""
    if b["mode"] == "inference":
        return f"memory.inference[{b['format']}]"
    return b["what"].split(" ", 1)[0]


def budget_line(b: dict, rep: dict, limit_text: Optional[str] = None) -> str:
    """'memory.inference[nf4] = 4.12 GiB <= 6GiB: pass (...)': the figure that decided, the limit, the verdict."""
    ok = b["verdict"] == "pass"
    limit = limit_text or fmt_bytes(b["limit"])
    rel = "<=" if ok else ">"
    room = f"headroom {fmt_bytes(b['headroom'])}" if ok else f"over by {fmt_bytes(-b['headroom'])}"
    s = rep["settings"]
    at = f"batch {s['batch']}, context {s['context']}"
    if b["mode"] == "training":
        at += f", frozen weights in {s['format']}" + (", recomputation" if s.get("recompute") else "")
        if ".per_device" in b["what"] and s.get("parallel"):
            par = s["parallel"]
            at += f", {par['strategy']} on {par['devices']} devices, {par['grad_accum']} micro-batch(es) per step"
    return f"{budget_key(b)} = {fmt_bytes(b['figure'])} {rel} {limit}: {'pass' if ok else 'FAIL'} ({room}; {at})"


def expect_name(e: dict) -> str:
    """'params.total', or 'params.total of lm, vision' for a claim about part of the model."""
    return e["key"] + (f" of {', '.join(e['scope'])}" if e.get("scope") else "")


def expect_line(e: dict) -> str:
    k = e["key"]
    return (f"{expect_name(e)}: claimed {fmt_figure(k, e['claimed'])}, computed {fmt_figure(k, e['computed'])} "
            f"({e['relative_difference']:+.1%}, tolerance {e['tolerance']:.0%}): {'ok' if e['ok'] else 'FAIL'}")


# --- check tables ----------------------------------------------------------------------------------------------------
def table(title: str, cols: list[str], rows: list[list[str]], text_cols: int = 1, footer: list[str] | None = None,
          compact: bool = False, no_wrap: tuple[int, ...] = (), fit: Optional[int] = None):
    """A bold heading over a table (a rich title would wrap to the table's width). The first `text_cols` columns
    hold names and shapes (left-aligned, folded when the terminal is narrow, except the `no_wrap` ones: a type name
    is never cut in two); the others hold figures (right-aligned, never cut: their minimum width is their widest
    cell). `footer` is a last row after a rule. `compact`: no vertical rules (narrow terminals); `fit`: the width to
    fit, shared among the foldable columns by their widest cell."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    t = Table(header_style="bold", box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
              pad_edge=not compact, padding=(0, 1))
    every = rows + ([footer] if footer else [])
    widest = [max([len(c)] + [len(r[i]) for r in every]) for i, c in enumerate(cols)]
    folded = [i for i in range(text_cols) if i not in no_wrap]
    share: dict[int, int] = {}
    if fit:          # rich would crop the figures: give the foldable columns what the others leave, by need
        left = fit - sum(w for i, w in enumerate(widest) if i not in folded) - 3 * len(cols) - 1   # rules, padding
        need = sum(widest[i] for i in folded)
        if left < need:
            share = {i: max(8, left * widest[i] // max(1, need)) for i in folded}
    for i, c in enumerate(cols):
        if i < text_cols:
            t.add_column(c, justify="left", overflow="fold", no_wrap=i in no_wrap, width=share.get(i),
                         min_width=widest[i] if i in no_wrap else None)
        else:
            t.add_column(c, justify="right", no_wrap=True, min_width=max([len(c)] + [len(r[i]) for r in every]))
    for r in rows:
        t.add_row(*r)
    if footer:
        t.add_section()
        t.add_row(*footer, style="bold")
    return Group(Text(title, style="bold"), t)


def check_tables(rep: dict) -> list:
    """The tables `omnic check` prints for one report: counts and FLOPs, memory by format, training,
    expectations."""
    s = rep["settings"]
    p, f, m = rep["params"], rep["flops"], rep["memory"]
    video = any(i.get("kind") == "video" for i in (rep.get("inputs") or {}).values())
    at = f"batch {s['batch']}, context {s['context']}" + (f", frames {s['frames']}" if video else "")
    counts = [["params total", fmt_count(p["total"])],
              ["params trainable", fmt_count(p["trainable"])],
              ["params active (per token)", fmt_count(p["active"])]]
    if p["frozen"]:
        counts.append(["params frozen", fmt_count(p["frozen"])])
    counts += [["FLOPs prefill", fmt_flops(f["prefill"])],
               ["FLOPs per decoded token", fmt_flops(f["decode_per_token"])],
               ["FLOPs train step", fmt_flops(f["train_step"])]]
    out = [table(f"{rep['name']}  ({at})", ["", "value"], counts)]

    out.append(table(
        "memory by storage format (* the format in force; inference = weights + decode state + activation peak)",
        ["format", "weights", "decode state", "activation peak", "inference"],
        [[fmt + (" *" if fmt == s["format"] else ""), fmt_bytes(m["weights"][fmt]), fmt_bytes(m["decode_state"][fmt]),
          fmt_bytes(m["activation_peak"][fmt]), fmt_bytes(m["inference"][fmt])] for fmt in m["weights"]]))

    out.append(table(
        f"training memory (AdamW, frozen weights in {s['format']}" + (", recomputation" if s.get("recompute") else "")
        + ")",
        ["stage", "trainable", "weights+grads+optimizer", "frozen weights", "activations", "total", "FLOPs/step"],
        [[stage, fmt_count(q["trainable_params"]), fmt_bytes(q["weights_grads_optimizer"]),
          fmt_bytes(q["frozen_weights"]), fmt_bytes(q["activations"]), fmt_bytes(q["total"]),
          fmt_flops(q["flops_step"])] for stage, q in m["training"].items()]))

    par = s.get("parallel")
    if par:
        out.append(table(
            f"per device: {par['strategy']} on {par['devices']} devices (shards of {par['shard']}), micro-batch "
            f"{s['batch']} x {par['grad_accum']} accumulated (docs/scale-out.md)",
            ["stage", "params", "grads", "optimizer", "frozen", "gathered", "reduce", "activations", "total / device"],
            [[stage] + ([fmt_bytes(d[k]) for k in ("params", "grads", "optimizer", "frozen_weights", "gather_buffers",
                                                  "reduce_buffers", "activations", "total")]
                        if "per_device" in q["parallel"] and (d := q["parallel"]["per_device"]) else
                        [q["parallel"].get("error", "")] + [""] * 7)
             for stage, q in m["training"].items()]))

    if rep.get("expect"):
        out.append(table(
            "expectations (claimed in the spec vs computed)",
            ["figure", "claimed", "computed", "difference", "tolerance", "verdict"],
            [[expect_name(e), fmt_figure(e["key"], e["claimed"]), fmt_figure(e["key"], e["computed"]),
              f"{e['relative_difference']:+.1%}", f"{e['tolerance']:.0%}", "ok" if e["ok"] else "FAIL"]
             for e in rep["expect"]]))
    return out


def arrow() -> str:
    """→ where the output can show it, else ->."""
    import sys
    return "→" if (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "") == "utf8" else "->"


# --- summary ---------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of `omnic summary`: a node, a repeated group collapsed, or a dotted prefix (--depth)."""

    name: str
    type: str
    outputs: dict = field(default_factory=dict)   # output name -> tensor json (of the last node in the row)
    params: int = 0
    active: int = 0
    flops_prefill: int = 0
    out_bytes: int = 0
    count: int = 1                                # nodes merged into this row
    copies: int = 1                               # repeats of a group

    @property
    def label(self) -> str:
        if self.copies > 1:
            return f"{self.name} (x{self.copies})"
        if self.count > 1:
            return f"{self.name} ({self.count} nodes)"
        return self.name

    def to_json(self) -> dict:
        return {"name": self.name, "label": self.label, "type": self.type, "nodes": self.count,
                "copies": self.copies, "params": self.params, "active": self.active,
                "flops_prefill": self.flops_prefill, "output_bytes": self.out_bytes, "outputs": self.outputs}


def summary_rows(rep: dict, depth: Optional[int] = None, compute_bytes: int = 2) -> list[Row]:
    """Rows of the summary: nodes of one repeat `group` collapse into one row; `depth` keeps that many dotted
    components of each name (`depth=1`: one row per top-level layer). Rows keep the order of first appearance."""
    rows: dict[str, Row] = {}
    groups: dict[str, set] = {}      # key -> repeat groups of its nodes (None for ungrouped nodes)
    copies: dict[str, set] = {}      # key -> repeat indices seen
    for n in rep["nodes"]:
        g = n["group"]
        key = g or n["name"]
        if depth is not None and depth >= 1:
            key = ".".join(key.split(".")[:depth])
        r = rows.get(key)
        if r is None:
            r = rows[key] = Row(key, n["op"], count=0)
            groups[key], copies[key] = set(), set()
        elif r.type != n["op"]:
            r.type = "mixed"
        r.count += 1
        r.params += n["params"]
        r.active += n["active"]
        r.flops_prefill += n["flops_prefill"]
        r.out_bytes += n["out_elems"] * compute_bytes
        r.outputs = n["outputs"]
        groups[key].add(g)
        if g:
            copies[key].add(n["name"][len(g) + 1:].split(".")[0])
    for key, r in rows.items():
        if len(groups[key]) == 1 and None not in groups[key]:
            r.copies = len(copies[key])
    return list(rows.values())


def summary_total(rep: dict, rows: list[Row]) -> Row:
    t = Row("total", "", count=sum(r.count for r in rows))
    for r in rows:
        t.params += r.params
        t.active += r.active
        t.flops_prefill += r.flops_prefill
        t.out_bytes += r.out_bytes
    return t


def summary_table(rep: dict, rows: list[Row], width: Optional[int] = None, connections: bool = False):
    """The `omnic summary` table. Tied weights read `tied -> embed` (counted at their owner). Below 120 columns it
    is compact: no vertical rules, `active` left out when it equals `params` on every row, shorter headings; below
    100 also without the output memory. Type names are never cut; names and shapes fold.
    `connections` adds Keras's "connected to" column (each row's inputs, inferred ones marked `~`)."""
    s = rep["settings"]
    narrow = width is not None and width < 120
    tight = width is not None and width < 100
    same_active = all(r.active == r.params for r in rows)
    tied = {n["name"]: n.get("tied_to") for n in rep.get("nodes", [])}
    feeds = {n["name"]: n.get("inputs", []) for n in rep.get("nodes", [])}

    def params_cell(r: Row) -> str:
        if r.params:
            return fmt_count(r.params)
        owner = tied.get(r.name)
        if not owner:
            return "-"
        return f"tied {arrow()} {owner.rsplit('.', 1)[-1] if narrow else owner}"

    def connected(r: Row) -> str:
        first = r.name if r.name in feeds else next((n for n in feeds if n.startswith(r.name + ".")), None)
        srcs = [("~" if e.get("inferred") else "") + e["from"] + ("" if e["output"] == "out" else "." + e["output"])
                for e in feeds.get(first, [])]
        return ", ".join(srcs) or "-"

    cols = ["layer", "type", "output shape"] + (["connected to"] if connections else []) + \
        ["params"] + ([] if narrow and same_active else ["active"]) + \
        (["FLOPs"] if tight else ["FLOPs", "out mem"] if narrow else ["FLOPs prefill", "output memory"])

    def cells(r: Row, shapes: str = "", total: bool = False) -> list[str]:
        out = [r.label, r.type, shapes] + ([connected(r) if not total else ""] if connections else [])
        out.append(fmt_count(r.params) if total else params_cell(r))
        if not (narrow and same_active):
            out.append(fmt_count(r.active) if r.active or total else "-")
        out.append(fmt_flops(r.flops_prefill) if r.flops_prefill or total else "-")
        return out if tight else out + [fmt_bytes(r.out_bytes)]

    def shape(t: dict) -> str:
        return fmt_shape(t).replace(", ", ",") if narrow else fmt_shape(t)

    body = [cells(r, "; ".join(shape(v) if k == "out" else f"{k}: {shape(v)}" for k, v in r.outputs.items()))
            for r in rows]
    tot = summary_total(rep, rows)
    foot = cells(Row("total", "", params=tot.params, active=tot.active, flops_prefill=tot.flops_prefill,
                     out_bytes=tot.out_bytes), total=True)
    text = 4 if connections else 3
    return table(f"{rep['name']}  (batch {s['batch']}, context {s['context']})", cols, body, text_cols=text,
                 footer=foot, compact=narrow, no_wrap=(1,), fit=width if narrow else None)


def summary_json(rep: dict, rows: list[Row]) -> dict[str, Any]:
    return {"name": rep["name"], "settings": rep["settings"], "rows": [r.to_json() for r in rows],
            "total": summary_total(rep, rows).to_json()}
