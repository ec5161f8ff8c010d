"""How an OmnicModel runs its graph, and what it checks while it is built, for either runtime (the framework-free
part of `runtime_torch/model.py` and `runtime_mlx/model.py`).

  make_plan(graph, input_names, output_names)   the schedule, computed once at construction: for each live node
                                                (one that a model output depends on, in graph order) the slots of its
                                                inputs, where its outputs go, and which slots die after it
                                                (intermediates are released at their last use);
  run(plan, steps, inputs, modules)             one call of the model: {output name: value}; the inputs are checked
                                                first against what the graph declares (runtime_common/input_spec.py):
                                                a wrong rank, fixed size, dtype, batch or placeholder count is a
                                                ValueError naming what the spec expects (before any op sees it);
  resolve_ties(weight_decls, check)             {tied full name: owner full name}, chains followed, shapes checked;
  check_declared(...)                           the error for a module that does not build its op's tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

from compiler.ir import Graph
from compiler.registry import W

Out = Union[int, tuple[tuple[str, int], ...]]     # the slot of a single output, or (output name, slot) pairs
Step = tuple[Any, tuple[int, ...], Out, tuple[int, ...]]   # (node, input slots, out, slots freed after it)


@dataclass(frozen=True)
class Plan:
    n_slots: int
    input_slots: tuple[tuple[str, int], ...]      # (model input name, slot), for the inputs a live node reads
    outputs: tuple[tuple[str, int], ...]          # (output name `node` or `node.output`, slot)
    steps: tuple[Step, ...]                       # the node of each step is its name
    input_set: frozenset[str]
    input_specs: tuple = ()                       # runtime_common.input_spec.InputSpec of each input a live node reads


def make_plan(g: Graph, input_names: list[str], output_names: list[str]) -> Plan:
    want = list(g.outputs)
    live: set[str] = set()
    stack = [n for n, _ in want]
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack.extend(src for src, _ in g[n].inputs)
    order = [n for n in g.order if n in live]
    pos = {n: i for i, n in enumerate(order)}
    needed = set(want) | {e for n in order for e in g[n].inputs}
    slot: dict[tuple[str, str], int] = {}
    for key in sorted(needed, key=lambda e: (pos[e[0]], e[1])):
        slot[key] = len(slot)
    outputs = tuple((k, slot[e]) for k, e in zip(output_names, want))
    names = [n for n in order if g[n].op != "Input"]
    last: dict[int, int] = {}
    for i, n in enumerate(names):
        for e in g[n].inputs:
            last[slot[e]] = i
    keep = {i for _, i in outputs}
    steps = []
    for i, n in enumerate(names):
        node = g[n]
        if list(node.outputs) == ["out"]:
            out: Out = slot[(n, "out")]
        else:
            out = tuple((o, slot[(n, o)]) for o in node.outputs if (n, o) in slot)
        free = tuple(sorted({s for s, j in last.items() if j == i and s not in keep}))
        steps.append((n, tuple(slot[e] for e in node.inputs), out, free))
    from .input_spec import describe
    read = {n for n, _ in slot if g[n].op == "Input"}
    return Plan(n_slots=len(slot), outputs=outputs, steps=tuple(steps), input_set=frozenset(input_names),
                input_specs=tuple(s for s in describe(g) if s.name in read),
                input_slots=tuple((n, slot[(n, "out")]) for n in input_names if (n, "out") in slot))


def run(plan: Plan, steps: tuple[Step, ...], inputs: Mapping[str, Any],
        modules: Optional[Mapping[str, Callable]] = None) -> dict[str, Any]:
    """Run `steps` (the plan's, each node given as its callable, or as its name in `modules`) on `inputs`."""
    if inputs.keys() != plan.input_set:
        missing = sorted(plan.input_set - inputs.keys())
        extra = sorted(inputs.keys() - plan.input_set)
        raise TypeError(f"model inputs are {sorted(plan.input_set)}; missing {missing}, unexpected {extra}")
    if plan.input_specs:
        from .input_spec import check
        check(plan.input_specs, inputs)
    env: list = [None] * plan.n_slots
    for name, i in plan.input_slots:
        env[i] = inputs[name]
    for mod, ins, out, free in steps:
        y = (mod if modules is None else modules[mod])(*[env[i] for i in ins])
        if type(out) is int:
            env[out] = y
        else:
            for k, i in out:
                env[i] = y[k]
        for i in free:
            env[i] = None
    return {k: env[i] for k, i in plan.outputs}


def resolve_ties(decls: Mapping[str, W], check: Optional[Callable[[str, str], None]] = None) -> dict[str, str]:
    """{tied full name: owner full name}: each chain of ties followed to the tensor that owns its storage, which must
    be a tensor of the model with the same shape; `check(name, owner)` may refuse a pair for a runtime's reason."""
    ties = {}
    for name, w in decls.items():
        if not w.tied_to:
            continue
        owner, seen = w.tied_to, {name}
        while owner in decls and decls[owner].tied_to and owner not in seen:
            seen.add(owner)
            owner = decls[owner].tied_to
        if owner not in decls or decls[owner].tied_to:
            raise ValueError(f"{name} is tied to {w.tied_to!r}, which is not a tensor of this model")
        if tuple(decls[owner].shape) != tuple(w.shape):
            raise ValueError(f"{name} {tuple(w.shape)} is tied to {owner} of another shape "
                             f"{tuple(decls[owner].shape)}")
        if check is not None:
            check(name, owner)
        ties[name] = owner
    return ties


def check_declared(node, mod, decl: Mapping[str, W], have: dict[str, tuple], want: dict[str, tuple], runtime: str,
                   tied_hint: str, layout: str = "") -> None:
    """Raise unless the tensors a module built (`have`: {relative name: shape}) are those its op declares untied
    (`want`), naming each difference; `tied_hint` says how the runtime leaves a tied tensor out, `layout` which
    layout the shapes are in."""
    if have == want:
        return
    lines = [f"  missing {k} {s}" for k, s in want.items() if k not in have]
    lines += [f"  undeclared {k} {s}" + (f" (declared tied: {tied_hint})" if k in decl else "")
              for k, s in have.items() if k not in want]
    lines += [f"  {k}: declared {want[k]}{layout}, built {s}" for k, s in have.items() if k in want and want[k] != s]
    raise ValueError(f"node {node.name}: the {runtime} implementation {type(mod).__qualname__} of {node.op} does not "
                     f"build the tensors its op declares:\n" + "\n".join(lines))
