"""Repeated layers traced once: `--target onnx` traces one layer of each kind of a stack (the 30 decoder blocks of
nanoVLM original_small) and calls that trace for every copy, with the copy's own weights.

    kinds = repeated(compiled.graph, model)      # [[node names of one kind], ...], two or more names each
    with traced_once(model, kinds):              # each copy's forward calls torch's invoke_subgraph
        program = torch.export.export(...)       # one subgraph per kind, called once per copy

torch.export traces every call of a module anew (about 3 ms per traced op on 2 cores, so the 42 blocks of nanoVLM
original_small were 5 to 6 s of its 12 s trace). `invoke_subgraph` is the higher-order op behind
`torch.compiler.nested_compile_region`; called directly (not through `nested_compile_region`, which in non-strict
export traces the region with Dynamo, whose strict mode refuses the runtime's Python: the struct-packed float32
RoPE constants), its proxy-mode rule traces the callable once per identifier and reuses that graph for the later
calls. The ONNX exporter turns each subgraph into an ONNX function called once per copy, and `onnx_convert.optimise`
inlines the functions before anything else, so the saved graph has the plain trace's nodes (tests/test_onnx_repeat.py).

Layers of one kind: nodes the compiler unrolled from a stack (`Node.group`), with one tensor output, the same op,
the same resolved params but for `layer_index` (its position in the stack), the same input types but for
`positioned` (whether positions were applied before: the first block of a RoPE stack gets unpositioned tokens), the
same module class and the same tensor names, shapes and dtypes. Both exceptions are compiler metadata that no
runtime reads (tests/test_onnx_repeat.py checks that).
Two details keep the graph the plain one:
  - the symbolic sizes of a copy's inputs (batch, length) are the subgraph's first operands, ahead of the tensors:
    make_fx binds each size to the first placeholder that carries it, so the subgraph reads the caller's sizes
    instead of measuring its input again. After inlining, every copy's shape arithmetic and RoPE table are the same
    nodes on the same inputs, which common-subexpression elimination merges, as in the plain graph;
  - the parameters do not require grad while tracing (an inference export): otherwise invoke_subgraph's autograd
    rule re-traces the subgraph at every call to build its schema, which costs what the reuse saves.
Source: torch/_higher_order_ops/invoke_subgraph.py (the ProxyTorchDispatchMode rule and its cache),
torch/onnx/_internal/exporter/_torchlib/ops/hop.py (`higher_order_invoke_subgraph`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Iterator, Sequence

import torch
from torch._higher_order_ops.invoke_subgraph import invoke_subgraph


def _tensors(mod: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The module's parameters and buffers, tied ones included, in a fixed order (read at call time: torch.export
    swaps in its fake tensors)."""
    return list(mod.named_parameters(remove_duplicate=False)) + list(mod.named_buffers(remove_duplicate=False))


def repeated(graph, model) -> list[list[str]]:
    """Node names of each kind of repeated layer that has two or more copies, in graph order (module docstring)."""
    kinds: dict[tuple, list[str]] = {}
    for node in graph.nodes():
        if node.group is None or list(node.outputs) != ["out"]:
            continue
        mod = model.node(node.name)
        tensors = tuple((k, tuple(t.shape), t.dtype) for k, t in _tensors(mod))
        if not tensors:
            continue
        params = json.dumps(node.params.model_dump(mode="json", exclude={"layer_index"}), sort_keys=True)
        types = tuple(dataclasses.replace(t, positioned=False) for t in graph.input_types(node))
        key = (node.op, params, types, type(mod), tensors)
        kinds.setdefault(key, []).append(node.name)
    return [names for names in kinds.values() if len(names) > 1]


class _Body:
    """The subgraph of one kind: (sizes..., inputs..., tensors...) -> (output,), the first copy's module run with the
    tensors given. `n_sizes` is set by each call just before invoke_subgraph runs it."""

    def __init__(self, mod: torch.nn.Module, n_inputs: int):
        self.mod, self.n_inputs, self.n_sizes = mod, n_inputs, 0
        self.names = [k for k, _ in _tensors(mod)]

    def __call__(self, *operands):
        xs = operands[self.n_sizes:self.n_sizes + self.n_inputs]
        tensors = dict(zip(self.names, operands[self.n_sizes + self.n_inputs:]))
        own = self.mod.__dict__.pop("forward")             # the class's forward, not this call's
        try:
            return (torch.func.functional_call(self.mod, tensors, xs),)
        finally:
            self.mod.forward = own


class _Call:
    """A copy's forward during the trace: invoke_subgraph of its kind's body on (sizes, inputs, its tensors)."""

    def __init__(self, mod: torch.nn.Module, body: _Body, kind: str):
        self.mod, self.body, self.kind = mod, body, kind

    def __call__(self, *xs):
        sizes: list[torch.SymInt] = []
        for x in xs:
            sizes += [d for d in x.shape if isinstance(d, torch.SymInt) and not any(d is s for s in sizes)]
        # the identifier names the inputs' shapes too: a copy called on other shapes gets its own subgraph
        ident = f"{self.kind}{[tuple(map(str, x.shape)) for x in xs]}"
        self.body.n_sizes = len(sizes)
        return invoke_subgraph(self.body, ident, *sizes, *xs, *(t for _, t in _tensors(self.mod)))[0]


@contextlib.contextmanager
def traced_once(model, kinds: Sequence[Sequence[str]]) -> Iterator[None]:
    """While open, each named node's forward calls its kind's subgraph (module docstring), and no parameter requires
    grad; both restored on exit. With no kinds, nothing changes."""
    if not kinds:
        yield
        return
    grads = [(p, p.requires_grad) for p in model.parameters()]
    patched = []
    try:
        model.requires_grad_(False)
        for i, names in enumerate(kinds):
            first = model.node(names[0])
            body = _Body(first, len(model.graph.input_types(model.graph[names[0]])))
            for name in names:
                mod = model.node(name)
                mod.forward = _Call(mod, body, f"omnic_layer{i}")
                patched.append(mod)
        yield
    finally:
        for mod in patched:
            mod.__dict__.pop("forward", None)
        for p, g in grads:
            p.requires_grad_(g)
