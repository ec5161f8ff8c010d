"""Pictures of the layer graph: Graphviz DOT (rendered to SVG / PNG by Graphviz's `dot`) and Mermaid text.

`picture(compiled, depth)` reduces the graph to boxes and arrows, the way `omnic summary` reduces it to rows:
  * the nodes of one repeat group (`blocks.0` ... `blocks.11`, group `blocks`) become one box "blocks x12";
    `depth` keeps that many dotted name components (depth 1: one box per top-level layer);
  * a box reads: name, type, output shape (symbolic: B batch, T text length, F frames), parameter count;
  * model inputs (op `Input`) and model outputs (the graph's outputs) are boxes of their own shapes and colours;
  * arrows written in the spec are solid; arrows the compiler inferred (wiring inference) are dashed, labelled
    "inferred". Arrows inside one box are not drawn.
`to_dot` / `to_mermaid` print a picture; both are pure functions of the graph (same spec, same bytes).
`write(compiled, path)` picks the format from the file's extension (FORMATS). Only SVG / PNG / PDF need anything
installed: the `graphviz` Python package (`pip install -e ".[graph]"` in the checkout) and the `dot` program
(Debian: graphviz).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from . import cost
from .tables import fmt_count

# extension -> format; "svg" / "png" / "pdf" go through Graphviz
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid",
           ".md": "markdown"}
INPUT, LAYER, OUTPUT = "input", "layer", "output"
INFERRED = "inferred"


class PictureError(Exception):
    """A picture that cannot be written (unknown extension, Graphviz missing); the message says what to do."""


@dataclass
class Box:
    key: str                      # unique; the DOT node id
    kind: str                     # INPUT, LAYER or OUTPUT
    lines: list[str]              # label, first line the name
    frozen: bool = False


@dataclass
class Arrow:
    src: str
    dst: str
    inferred: bool
    label: str = ""               # the producer's output name when not "out"; "inferred" for inferred wiring


@dataclass
class Picture:
    title: str
    boxes: list[Box] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)


# --- the graph as boxes and arrows -----------------------------------------------------------------------------------
def _shape(t) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def _row_key(name: str, group: Optional[str], depth: Optional[int]) -> str:
    """The box a node belongs to: its repeat group, else itself; cut to `depth` dotted components."""
    key = group or name
    return ".".join(key.split(".")[:depth]) if depth else key


def picture(compiled, depth: Optional[int] = None) -> Picture:
    """Boxes and arrows of a compiled spec (see the module docstring). `compiled` must be valid."""
    g = compiled.graph
    s = compiled.settings
    params = {c.name: c.params for c in cost.cost_nodes(g, s["batch"], s["context"], s["frames"])}
    title = f"{compiled.doc.name}  (B = batch, T = text length; dashed arrows: inferred wiring)"
    pic = Picture(title)

    # group nodes into boxes, keeping the order of first appearance
    members: dict[str, list] = {}
    box_of: dict[str, str] = {}
    for n in g.nodes():
        key = "input:" + n.name if n.op == "Input" else _row_key(n.name, n.group, depth)
        members.setdefault(key, []).append(n)
        box_of[n.name] = key
    for key, nodes in members.items():
        last = nodes[-1]
        outs = "; ".join(_shape(t) if k == "out" else f"{k}: {_shape(t)}" for k, t in last.outputs.items())
        if nodes[0].op == "Input":
            pic.boxes.append(Box(key, INPUT, [f"input {last.name}", f"{last.out.kind} {outs}"]))
            continue
        groups = {n.group for n in nodes}
        copies = len({n.name[len(n.group) + 1:].split(".")[0] for n in nodes}) \
            if len(groups) == 1 and None not in groups else 1
        ops = list(dict.fromkeys(n.op for n in nodes))
        name = key + (f" x{copies}" if copies > 1 else "")
        kind = ops[0] if len(ops) == 1 else ", ".join(ops[:3]) + (", ..." if len(ops) > 3 else "")
        if len(nodes) > copies:
            kind += f" ({len(nodes)} nodes)"
        total = sum(params[n.name] for n in nodes)
        count = f"params {fmt_count(total)}" + (f" ({fmt_count(total // copies)} each)" if copies > 1 and total
                                                 else "")
        frozen = all(n.frozen for n in nodes)
        pic.boxes.append(Box(key, LAYER, [name, kind, outs, count] + (["frozen"] if frozen else []), frozen))

    seen = set()
    for n in g.nodes():
        for (src, out), inferred in zip(n.inputs, n.inferred):
            a, b = box_of[src], box_of[n.name]
            label = ", ".join(x for x in (out if out != "out" else "", INFERRED if inferred else "") if x)
            if a == b or (a, b, label) in seen:
                continue
            seen.add((a, b, label))
            pic.arrows.append(Arrow(a, b, inferred, label))
    for node, out in g.outputs:
        name = node if out == "out" else f"{node}.{out}"
        key = "output:" + name
        pic.boxes.append(Box(key, OUTPUT, [f"output {name}", _shape(g[node].outputs[out])]))
        pic.arrows.append(Arrow(box_of[node], key, False))
    return pic


# --- DOT ---------------------------------------------------------------------------------------------------------------
_DOT_STYLE = {   # kind -> (shape, fill, outline)
    INPUT: ("invhouse", "#e3f4e1", "#4a8a3f"),
    OUTPUT: ("house", "#fdebd3", "#c77a1a"),
    LAYER: ("box", "#eef3fb", "#5b7db1"),
}
_FROZEN_FILL = "#e6e6e6"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(pic: Picture) -> str:
    lines = ["digraph omnic {",
             f'  graph [rankdir=TB, labelloc=t, fontname="Helvetica", fontsize=12, label={_q(pic.title)}];',
             '  node [style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9, color="#444444"];']
    for b in pic.boxes:
        shape, fill, line = _DOT_STYLE[b.kind]
        fill = _FROZEN_FILL if b.frozen else fill
        lines.append(f'  {_q(b.key)} [shape={shape}, fillcolor="{fill}", color="{line}", '
                     f"label={_q(chr(10).join(b.lines))}];")
    for a in pic.arrows:
        attrs = ["style=dashed"] if a.inferred else []
        if a.label:
            attrs.append(f"label={_q(a.label)}")
        lines.append(f"  {_q(a.src)} -> {_q(a.dst)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    return "\n".join(lines + ["}"]) + "\n"


# --- Mermaid -----------------------------------------------------------------------------------------------------------
_MERMAID_SHAPE = {INPUT: ('[/"', '"/]'), OUTPUT: ('[["', '"]]'), LAYER: ('["', '"]')}
_MERMAID_CLASS = {INPUT: "fill:#e3f4e1,stroke:#4a8a3f", OUTPUT: "fill:#fdebd3,stroke:#c77a1a",
                  "frozen": f"fill:{_FROZEN_FILL},stroke:#888888"}


def _m(s: str) -> str:
    return s.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(pic: Picture) -> str:
    ids = {b.key: f"n{i}" for i, b in enumerate(pic.boxes)}
    lines = ["---", f"title: {json.dumps(pic.title)}", "---", "flowchart TB"]
    for b in pic.boxes:
        left, right = _MERMAID_SHAPE[b.kind]
        lines.append(f"  {ids[b.key]}{left}{'<br/>'.join(_m(x) for x in b.lines)}{right}")
    for a in pic.arrows:
        link = "-.->" if a.inferred else "-->"
        label = f'|"{_m(a.label)}"|' if a.label else ""
        lines.append(f"  {ids[a.src]} {link}{label} {ids[a.dst]}")
    for cls, style in _MERMAID_CLASS.items():
        who = [ids[b.key] for b in pic.boxes if (b.frozen if cls == "frozen" else b.kind == cls)]
        if who:
            lines += [f"  classDef {cls} {style}", f"  class {','.join(who)} {cls}"]
    return "\n".join(lines) + "\n"


# --- files ---------------------------------------------------------------------------------------------------------------
def format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise PictureError(f"cannot tell the picture format of {path!r}: use one of " + ", ".join(FORMATS))
    return FORMATS[ext]


def render(dot: str, fmt: str) -> bytes:
    """DOT text -> SVG / PNG / PDF bytes through Graphviz (errors name what to install)."""
    try:
        import graphviz
    except ImportError:
        from .install_hint import pip_command
        raise PictureError(f"writing {fmt.upper()} needs the graphviz Python package: {pip_command('graph')} "
                           "(or write .dot / .mmd, which need nothing)") from None
    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise PictureError(f"writing {fmt.upper()} needs Graphviz's `dot` program, which is not on PATH: install "
                           "the graphviz package (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
                           "graphviz), or write .dot / .mmd, which need nothing") from None
    except graphviz.CalledProcessError as e:
        raise PictureError(f"Graphviz failed: {e.stderr.decode(errors='replace').strip() if e.stderr else e}") \
            from None


def picture_bytes(compiled, fmt: str, depth: Optional[int] = None) -> bytes:
    pic = picture(compiled, depth)
    if fmt == "mermaid":
        return to_mermaid(pic).encode()
    if fmt == "markdown":
        return f"# {compiled.doc.name}\n\n```mermaid\n{to_mermaid(pic)}```\n".encode()
    dot = to_dot(pic)
    return dot.encode() if fmt == "dot" else render(dot, fmt)


def write(compiled, path: str, depth: Optional[int] = None) -> str:
    """Write the picture of `compiled` to `path` (format from the extension, atomically); return the format."""
    fmt = format_of(path)
    data = picture_bytes(compiled, fmt, depth)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return fmt
