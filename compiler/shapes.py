"""Shape inference: each node's op resolves its params against its input types and gives its output types.

Called by lowering as each node is reached (wiring inference needs the types of earlier nodes), and usable alone
on a wired graph (`infer_shapes`).
"""
from __future__ import annotations

from . import registry
from .diagnostics import Diagnostics
from .ir import Graph, Node


def infer_node(g: Graph, node: Node, diag: Diagnostics) -> bool:
    op = registry.get(node.op)
    ins = [g[src].outputs[out] for src, out in node.inputs]
    # nodes made by wiring inference (a Flatten, a sequence join) point at the layer that needed them
    implicit = node.op in ("Flatten", "Concat") and bool(node.inferred) and all(node.inferred)
    base = node.path if implicit else node.path + ("params",)
    errors = []
    edge: list[str] = []     # set while resolving: a contradiction there is about an edge, so name both ends

    def report(field: str, msg: str, hint: str | None = None, severity: str = "error") -> None:
        path = base + tuple(f for f in field.split(".") if f) if field else node.path
        if severity != "error":
            diag.add(severity, path, msg, hint, code="default")   # identical warnings of a stack are kept once
            return
        errors.append(msg)
        msg += edge[0] if edge else ""
        diag.error(path, f"{node.name}: {msg}" if node.group else msg, hint, code="shape")

    # slot arity and kinds
    slots = op.slots
    if slots and not slots[-1].variadic:
        need = sum(1 for s in slots if not s.optional)
        if not (need <= len(ins) <= len(slots)):
            names = ", ".join(s.name + (" (optional)" if s.optional else "") for s in slots)
            report("", f"{op.name} takes {need if need == len(slots) else f'{need} to {len(slots)}'} input(s) "
                       f"({names}), got {len(ins)}",
                   f"list them in the layer's \"inputs\": ids of inputs or earlier layers, in that order"
                   if len(ins) < need else None)
            return False
    for i, t in enumerate(ins):
        s = slots[min(i, len(slots) - 1)] if slots else None
        if s is not None and t.kind not in s.kinds:
            src = node.inputs[i][0]
            report("", f"input {i} ('{s.name}') must be {' or '.join(s.kinds)}, but {src} gives {t.kind} {t}",
                   "wire a layer of the right kind, or insert Flatten / Reshape / Select")
            return False
    edge.append(" (edge: " + ", ".join(f"{src}{'' if out == 'out' else '.' + out} {t}" for (src, out), t in
                                       zip(node.inputs, ins)) + f" -> {node.name})" if ins else "")
    try:
        p = op.resolve(node.params, ins, report)
        if errors:
            return False
        outs = op.shape(p, ins)
    except (ValueError, ZeroDivisionError, TypeError, KeyError, IndexError) as e:
        report("", f"cannot infer the output shape of {op.name} from inputs "
                   f"{', '.join(str(t) for t in ins) or '(none)'}: {e}")
        return False
    node.params = p
    node.outputs = outs
    return True


def infer_shapes(g: Graph, diag: Diagnostics) -> bool:
    ok = True
    for node in g.nodes():
        if node.op == "Input":
            continue
        ok = infer_node(g, node, diag) and ok
    return ok
