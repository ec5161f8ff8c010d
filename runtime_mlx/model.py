"""OmnicModel: a compiled graph as one `mlx.nn.Module` that runs its nodes in graph order (the mirror of
`runtime_torch/model.py`).

Module nesting follows the dotted node names: node `lm.model.layers.0` is the module at `lm -> model -> layers -> 0`
(plain `Container`s for the intermediate parts; a container of nodes "0".."n-1" is a list, as mlx-lm's `layers`),
so a weight it declares as `self_attn.q_proj.weight` has the flattened parameter name
`lm.model.layers.0.self_attn.q_proj.weight`: the torch state-dict key, the name the compiler counts and checkpoints
use. Children are dict entries (an MLX Module is a dict), so a node may be called
`train` or `update` without shadowing a method; bookkeeping lives in plain attributes, outside the parameter tree.

Each node's module must own exactly the tensors its op declares, in MLX layout (`layout.py`), checked as it is
built. A tensor declared `tied_to` another is not in the tree (`parameters()` lists it once, at its owner); the
module reads the owner's current array through `registry.tied`, so loading or updating the owner updates both.

`__call__(**inputs)` runs a plan precomputed at construction (`runtime_common/plan.py`): for each live node (one a
model output depends on), its module, the slots of its inputs, where its outputs go, and which slots die after it.
It returns {output name: array}, named `node` or `node.output` as in the report. Arrays are lazy: nothing is
computed until `mx.eval`.
"""
from __future__ import annotations

from typing import Optional, Union

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten

from compiler import registry as ops
from compiler.ir import Graph
from compiler.registry import W
from runtime_common import inputs as example, plan

from . import layout
from . import registry as impls


class Container(nn.Module):
    """A plain module holding the nodes (and containers) under one dotted prefix."""


def _keep(obj, **kw) -> None:
    """Set plain attributes that MLX must not route into the parameter tree (dicts, tuples, modules)."""
    for k, v in kw.items():
        object.__setattr__(obj, k, v)


def _child(parent: nn.Module, key: str, mod: nn.Module, where: str) -> None:
    """Attach `mod` as `parent[key]`; only a Container may be replaced (by the node whose prefix it held)."""
    old = parent.get(key)
    if old is not None and type(old) is not Container:
        raise ValueError(f"node {where!r} collides with a tensor or module of the same name inside "
                         f"{type(parent).__name__}")
    parent[key] = mod


class OmnicModel(nn.Module):
    def __init__(self, graph: Union[Graph, "Compiled"]):  # noqa: F821
        super().__init__()
        if not isinstance(graph, Graph):
            graph = graph.raise_for_errors().graph
        decls: dict[str, W] = {}
        perms: dict[str, Optional[layout.Perm]] = {}
        nodes: dict[str, nn.Module] = {}
        _keep(self, graph=graph, weight_decls=decls, perms=perms, ties={}, _nodes=nodes,
              input_names=[n.name for n in graph.nodes() if n.op == "Input"],
              output_names=[n if o == "out" else f"{n}.{o}" for n, o in graph.outputs])
        for node in graph.nodes():
            if node.op == "Input":
                continue
            decl = ops.get(node.op).weights(node.params)
            node_perms = {k: layout.perm_of(node.op, k, w) for k, w in decl.items()}
            mod = impls.get(node.op)(node.params, graph.input_types(node))
            _check_declared(node, mod, decl, node_perms)
            self._install(node.name, mod)
            nodes[node.name] = mod
            decls.update({f"{node.name}.{k}": w for k, w in decl.items()})
            perms.update({f"{node.name}.{k}": p for k, p in node_perms.items()})
        _listify(self)
        self._resolve_ties()
        self._make_plan()

    def __repr__(self) -> str:
        """One line per node: op, resolved sizes, parameters (runtime_common/describe.py)."""
        from runtime_common.describe import model_repr
        return model_repr(self, "mlx")

    # --- structure ---------------------------------------------------------------------------------------------------
    def _install(self, name: str, mod: nn.Module) -> None:
        *path, last = name.split(".")
        parent: nn.Module = self
        for i, part in enumerate(path):
            child = parent.get(part)
            if child is None:
                child = Container()
                _child(parent, part, child, ".".join(path[:i + 1]))
            parent = child
        old = parent.get(last)
        if type(old) is Container:          # made for deeper nodes: they become children of `mod`
            for k, v in old.items():
                _child(mod, k, v, f"{name}.{k}")
        _child(parent, last, mod, name)

    def module_at(self, path: str) -> nn.Module:
        """The module at a dotted path, following dict entries (and list items) only."""
        m = self
        for part in path.split(".") if path else ():
            m = m[int(part)] if isinstance(m, list) else m[part]
        return m

    def node(self, name: str) -> nn.Module:
        """The module of node `name`."""
        return self._nodes[name]

    def param(self, name: str) -> mx.array:
        """The array of a declared tensor (the owner's for a tied one), in MLX layout."""
        name = self.ties.get(name, name)
        mod, _, attr = name.rpartition(".")
        return self.module_at(mod)[attr]

    def assign(self, pairs) -> None:
        """Set owned tensors by full name: [(name, array in MLX layout)], each replacing an array of its shape."""
        for name, x in pairs:
            mod, _, attr = name.rpartition(".")
            parent = self.module_at(mod)
            cur = parent[attr]
            if not isinstance(cur, mx.array) or tuple(cur.shape) != tuple(x.shape):
                raise ValueError(f"{name}: cannot assign {tuple(x.shape)} to {getattr(cur, 'shape', cur)}")
            parent[attr] = x

    def named_parameters(self) -> dict[str, mx.array]:
        """{full name: array} of every owned tensor (tied ones once, at their owner), in MLX layout."""
        return dict(tree_flatten(self.parameters()))

    # --- ties --------------------------------------------------------------------------------------------------------
    def _resolve_ties(self) -> None:
        def same_layout(name: str, owner: str) -> None:
            if self.perms[owner] != self.perms[name]:
                raise ValueError(f"{name} and its owner {owner} have different MLX layouts")
        self.ties.update(plan.resolve_ties(self.weight_decls, same_layout))
        for name, owner in self.ties.items():
            mod, _, attr = name.rpartition(".")
            omod, _, oattr = owner.rpartition(".")
            impls.tie(self.module_at(mod), attr, self.module_at(omod), oattr)

    # --- running -----------------------------------------------------------------------------------------------------
    def _make_plan(self) -> None:
        schedule = plan.make_plan(self.graph, self.input_names, self.output_names)
        _keep(self, _schedule=schedule, _plan=schedule.steps)

    def __call__(self, **inputs: mx.array) -> dict[str, mx.array]:
        return plan.run(self._schedule, self._plan, inputs, self._nodes)

    def example_inputs(self, sizes: Optional[dict[str, int]] = None, seed: int = 0) -> dict[str, mx.array]:
        """Valid random inputs by name (`runtime_common/inputs.py`: ids below their consumers' vocabularies, image
        placeholders in place) at `sizes` (default B 2, T 8, F 2), floats in the model's dtype: the torch
        runtime's values, so `model(**model.example_inputs())` runs and compares across runtimes."""
        env = example.sizes(self.graph, {**example.DEFAULT_SIZES, **(sizes or {})})
        params = [a for a in self.named_parameters().values() if mx.issubdtype(a.dtype, mx.floating)]
        out = {k: mx.array(v) for k, v in example.example_inputs(self.graph, env, seed).items()}
        if params:
            out = {k: v.astype(params[0].dtype) if mx.issubdtype(v.dtype, mx.floating) else v
                   for k, v in out.items()}
        return out


def _is_box(m) -> bool:
    """A module that only holds others on a dotted path (a node-name Container, or an op's Box)."""
    from .node import Box
    return type(m) in (Container, Box)


def _listify(mod: nn.Module) -> None:
    """Path holders whose children are exactly "0".."n-1" become lists, as mlx-lm holds its layers: the flattened names
    are the same, and `tree_unflatten` (hence `Module.update` / `load_weights`) gives lists for numeric keys."""
    for k, v in list(mod.items()):
        if isinstance(v, nn.Module):
            _listify(v)
            if _is_box(v) and v and sorted(v.keys()) == sorted(str(i) for i in range(len(v))):
                mod[k] = [v[str(i)] for i in range(len(v))]
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, nn.Module):
                    _listify(x)


def _check_declared(node, mod: nn.Module, decl: dict[str, W], perms: dict) -> None:
    """The module's parameters must be exactly the op's declared (untied) tensors, with the declared shapes in MLX
    layout."""
    plan.check_declared(node, mod, decl, {k: tuple(v.shape) for k, v in tree_flatten(mod.parameters())},
                        {k: layout.mlx_shape(w.shape, perms[k]) for k, w in decl.items() if not w.tied_to}, "MLX",
                        "read it with registry.tied", " (MLX layout)")
