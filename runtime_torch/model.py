"""OmnicModel: a compiled graph as one nn.Module that runs its nodes in graph order.

Module nesting follows the dotted node names: node `lm.model.layers.0` is the module at `lm -> model -> layers -> 0`
(plain `Container`s for the intermediate parts), so a weight it declares as `self_attn.q_proj.weight` has the
state-dict key `lm.model.layers.0.self_attn.q_proj.weight`, the name the compiler counts and checkpoints use.
Children are written into `_modules` directly, so a node may be called `train` or `to` without shadowing.

Each node's module must own exactly the tensors its op declares (checked as it is built). A tensor declared
`tied_to` another is the owner's Parameter object itself (counted once by `named_parameters()`); ties are restored
after every `.to()` / `_apply`.

`forward(**inputs)` runs a plan precomputed at construction: for each live node (one that a model output depends
on), its module, the slots of its inputs, where its outputs go, and which slots die after it (intermediates are
released at their last use). It returns {output name: tensor}, named `node` or `node.output` as in the report.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

import torch
from torch import nn

from compiler import registry as ops
from compiler.ir import Graph
from compiler.registry import W

from . import registry as impls

if TYPE_CHECKING:
    from compiler import Compiled


class Container(nn.Module):
    """A plain module holding the nodes (and containers) under one dotted prefix."""


def _child(parent: nn.Module, key: str, mod: nn.Module, where: str) -> None:
    """Attach `mod` as `parent.<key>`; only a Container may be replaced (in place: same position)."""
    old = parent._modules.get(key)
    if key in parent._parameters or key in parent._buffers or (old is not None and not isinstance(old, Container)):
        raise ValueError(f"node {where!r} collides with a tensor or module of the same name inside "
                         f"{type(parent).__name__}")
    parent._modules[key] = mod


class OmnicModel(nn.Module):
    def __init__(self, graph: Union[Graph, "Compiled"]):
        super().__init__()
        if not isinstance(graph, Graph):
            graph = graph.raise_for_errors().graph
        self.graph = graph
        self.weight_decls: dict[str, W] = {}     # full name -> declaration, for every node
        self.ties: dict[str, str] = {}           # tied full name -> owner full name
        self.input_names = [n.name for n in graph.nodes() if n.op == "Input"]
        self.output_names = [n if o == "out" else f"{n}.{o}" for n, o in graph.outputs]
        self._nodes: dict[str, nn.Module] = {}
        for node in graph.nodes():
            if node.op == "Input":
                continue
            decl = ops.get(node.op).weights(node.params)
            mod = impls.get(node.op)(node.params, graph.input_types(node))
            _check_declared(node, mod, decl)
            self._install(node.name, mod)
            self._nodes[node.name] = mod
            self.weight_decls.update({f"{node.name}.{k}": w for k, w in decl.items()})
        self._resolve_ties()
        self._tie()
        self._make_plan()

    # --- structure ---------------------------------------------------------------------------------------------------
    def _install(self, name: str, mod: nn.Module) -> None:
        *path, last = name.split(".")
        parent: nn.Module = self
        for i, part in enumerate(path):
            child = parent._modules.get(part)
            if child is None:
                child = Container()
                _child(parent, part, child, ".".join(path[:i + 1]))
            parent = child
        old = parent._modules.get(last)
        if isinstance(old, Container):  # made for deeper nodes, which become children of `mod`
            for k, v in old._modules.items():
                _child(mod, k, v, f"{name}.{k}")
        _child(parent, last, mod, name)

    def module_at(self, path: str) -> nn.Module:
        """The module at a dotted path, following `_modules` only (node names may shadow nn.Module attributes)."""
        m: nn.Module = self
        for part in path.split(".") if path else ():
            m = m._modules[part]
        return m

    def node(self, name: str) -> nn.Module:
        """The module of node `name`."""
        return self._nodes[name]

    def param(self, name: str) -> nn.Parameter:
        mod, _, attr = name.rpartition(".")
        return self.module_at(mod)._parameters[attr]

    # --- ties --------------------------------------------------------------------------------------------------------
    def _resolve_ties(self) -> None:
        for name, w in self.weight_decls.items():
            if not w.tied_to:
                continue
            owner, seen = w.tied_to, {name}
            while owner in self.weight_decls and self.weight_decls[owner].tied_to and owner not in seen:
                seen.add(owner)
                owner = self.weight_decls[owner].tied_to
            if owner not in self.weight_decls or self.weight_decls[owner].tied_to:
                raise ValueError(f"{name} is tied to {w.tied_to!r}, which is not a tensor of this model")
            if tuple(self.weight_decls[owner].shape) != tuple(w.shape):
                raise ValueError(f"{name} {tuple(w.shape)} is tied to {owner} of another shape "
                                 f"{tuple(self.weight_decls[owner].shape)}")
            self.ties[name] = owner

    def _tie(self) -> None:
        for name, owner in self.ties.items():
            mod, _, attr = name.rpartition(".")
            setattr(self.module_at(mod), attr, self.param(owner))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._tie()
        return self

    # --- running -----------------------------------------------------------------------------------------------------
    def _make_plan(self) -> None:
        g = self.graph
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
        self._n_slots = len(slot)
        self._input_slots = tuple((n, slot[(n, "out")]) for n in self.input_names if (n, "out") in slot)
        self._outputs = tuple((k, slot[e]) for k, e in zip(self.output_names, want))
        steps = [n for n in order if g[n].op != "Input"]
        last: dict[int, int] = {}
        for i, n in enumerate(steps):
            for e in g[n].inputs:
                last[slot[e]] = i
        keep = {i for _, i in self._outputs}
        plan = []
        for i, n in enumerate(steps):
            node = g[n]
            if list(node.outputs) == ["out"]:
                out = slot[(n, "out")]
            else:
                out = tuple((o, slot[(n, o)]) for o in node.outputs if (n, o) in slot)
            free = tuple(sorted({s for s, j in last.items() if j == i and s not in keep}))
            plan.append((self._nodes[n], tuple(slot[e] for e in node.inputs), out, free))
        self._plan = tuple(plan)
        self._input_set = frozenset(self.input_names)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if inputs.keys() != self._input_set:
            missing = sorted(self._input_set - inputs.keys())
            extra = sorted(inputs.keys() - self._input_set)
            raise TypeError(f"model inputs are {sorted(self._input_set)}; missing {missing}, unexpected {extra}")
        env: list = [None] * self._n_slots
        for name, i in self._input_slots:
            env[i] = inputs[name]
        for mod, ins, out, free in self._plan:
            y = mod(*[env[i] for i in ins])
            if type(out) is int:
                env[out] = y
            else:
                for k, i in out:
                    env[i] = y[k]
            for i in free:
                env[i] = None
        return {k: env[i] for k, i in self._outputs}


def _check_declared(node, mod: nn.Module, decl: dict[str, W]) -> None:
    """The module's state dict must be exactly the op's declared (untied) tensors, with the declared shapes."""
    have = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
    want = {k: tuple(w.shape) for k, w in decl.items() if not w.tied_to}
    if have == want:
        return
    lines = [f"  missing {k} {s}" for k, s in want.items() if k not in have]
    lines += [f"  undeclared {k} {s}" + (" (declared tied: register_parameter(name, None))" if k in decl else "")
              for k, s in have.items() if k not in want]
    lines += [f"  {k}: declared {want[k]}, built {s}" for k, s in have.items() if k in want and want[k] != s]
    raise ValueError(f"node {node.name}: the torch implementation {type(mod).__qualname__} of {node.op} does not "
                     f"build the tensors its op declares:\n" + "\n".join(lines))
