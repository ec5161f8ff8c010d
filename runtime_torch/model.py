"""OmnicModel: a compiled graph as one nn.Module that runs its nodes in graph order.

Module nesting follows the dotted node names: node `lm.model.layers.0` is the module at `lm -> model -> layers -> 0`
(plain `Container`s for the intermediate parts), so a weight it declares as `self_attn.q_proj.weight` has the
state-dict key `lm.model.layers.0.self_attn.q_proj.weight`, the name the compiler counts and checkpoints use.
Children are written into `_modules` directly, so a node may be called `train` or `to` without shadowing.

Each node's module must own exactly the tensors its op declares (checked as it is built). A tensor declared
`tied_to` another is the owner's Parameter object itself (counted once by `named_parameters()`); ties are restored
after every `.to()` / `_apply`. `runtime_torch.pack` may store the weights in another layout (same names, shapes
and values) for fast decoding; a packed model is packed again after `.to()`.

`forward(**inputs)` runs a plan precomputed at construction (`runtime_common/plan.py`): for each live node (one that
a model output depends on), its module, the slots of its inputs, where its outputs go, and which slots die after it
(intermediates are released at their last use). It returns {output name: tensor}, named `node` or `node.output` as
in the report.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn

from compiler import registry as ops
from compiler.ir import Graph
from compiler.registry import W
from runtime_common import inputs as example, plan

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

    def __repr__(self) -> str:
        """One line per node: op, resolved sizes, parameters (runtime_common/describe.py)."""
        from runtime_common.describe import model_repr
        return model_repr(self, "torch")

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
        """The declared tensor `name`: a Parameter, or the buffer of a declaration with `buffer`."""
        mod, _, attr = name.rpartition(".")
        m = self.module_at(mod)
        return m._buffers[attr] if attr in m._buffers else m._parameters[attr]

    def put(self, name: str, t: torch.Tensor) -> None:
        """Make tensor `t` the declared tensor `name` (its storage, not a copy: how a model built on the meta device
        gets its tensors); the Parameter keeps its requires_grad. Call `_tie()` after the last one."""
        mod, _, attr = name.rpartition(".")
        m = self.module_at(mod)
        if attr in m._parameters:
            m._parameters[attr] = nn.Parameter(t, requires_grad=m._parameters[attr].requires_grad)
        else:
            m._buffers[attr] = t

    # --- ties --------------------------------------------------------------------------------------------------------
    def _resolve_ties(self) -> None:
        self.ties.update(plan.resolve_ties(self.weight_decls))

    def _tie(self) -> None:
        for name, owner in self.ties.items():
            mod, _, attr = name.rpartition(".")
            setattr(self.module_at(mod), attr, self.param(owner))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._tie()
        if getattr(self, "_packed", False):     # `.to()` copies tensors one by one: pack the copies again
            from .pack import pack
            pack(self)
        return self

    # --- running -----------------------------------------------------------------------------------------------------
    def _make_plan(self) -> None:
        self._schedule = plan.make_plan(self.graph, self.input_names, self.output_names)
        self._plan = tuple((self._nodes[n], *rest) for n, *rest in self._schedule.steps)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return plan.run(self._schedule, self._plan, inputs)

    def example_inputs(self, sizes: Optional[dict[str, int]] = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """Valid random inputs by name (`runtime_common/inputs.py`: ids below their consumers' vocabularies, image
        placeholders in place) at `sizes` (default B 2, T 8, F 2), floats in the model's dtype, on its device:
        `model(**model.example_inputs())` runs."""
        env = example.sizes(self.graph, {**example.DEFAULT_SIZES, **(sizes or {})})
        p = next((t for t in self.parameters() if t.is_floating_point()), None)
        dev, dt = (p.device, p.dtype) if p is not None else (None, None)
        out = {k: torch.from_numpy(v).to(dev) for k, v in example.example_inputs(self.graph, env, seed).items()}
        return {k: v.to(dt) if dt is not None and v.is_floating_point() else v for k, v in out.items()}


def _check_declared(node, mod: nn.Module, decl: dict[str, W]) -> None:
    """The module's state dict must be exactly the op's declared (untied) tensors, with the declared shapes."""
    plan.check_declared(node, mod, decl, {k: tuple(v.shape) for k, v in mod.state_dict().items()},
                        {k: tuple(w.shape) for k, w in decl.items() if not w.tied_to}, "torch",
                        "register_parameter(name, None)")
