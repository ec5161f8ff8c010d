"""Accounting: parameters, FLOPs, weight bytes by format, decode state, activation peak, training memory.

Conventions (printed with every report):
  * parameters: each tensor once (tied weights at their owner), from the ops' weight declarations; persistent
    buffers (W.buffer) are stored and count in weight bytes, not in parameters (as torch's `parameters()`);
    active = per token: stacked expert tensors count top_k / E of their size;
  * FLOPs = 2 x multiply-accumulates of matrix products (elementwise work, norms, softmax and look-ups count 0);
    attention adds 4 x q x kv x heads x head_dim; causal attention counts the lower triangle with its diagonal
    (q(q+1)/2 pairs), bidirectional the full square. "prefill" is one forward over the context (T = context);
    "decode" is what one more token costs with the KV cache holding the context; training = 3 x forward for
    trained parts (2 x where only input gradients pass, 1 x for frozen parts nothing upstream of which trains);
  * memory in bytes: inference = weights (format) + decode state at (batch, context) + activation peak of the
    prefill (liveness over the graph, compute dtype bf16, fp32 for the fp32 format);
    training = trainable x 16 B (bf16 weight + bf16 grad + fp32 master + AdamW m, v) + frozen weights (format)
    + activations saved for backward (outputs and op workspaces on the gradient path; with recomputation only
    block inputs plus the largest block).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import registry
from .formats import FORMATS, Format, tensor_bits
from .ir import Graph, Node
from .registry import Ctx, W

TRAIN_BYTES_PER_PARAM = 16     # bf16 weight 2 + bf16 grad 2 + fp32 master 4 + Adam m 4 + v 4


@dataclass
class NodeCost:
    name: str
    op: str
    group: Optional[str]
    params: int = 0
    active: float = 0.0
    trainable: int = 0
    flops_prefill: int = 0
    flops_decode: int = 0
    state: int = 0                 # decode state elements at (batch, context)
    out_elems: int = 0
    workspace: int = 0
    saved: int = 0
    weights: dict = field(default_factory=dict)   # name -> W (own tensors only)


def node_weights(node: Node) -> dict[str, W]:
    op = registry.get(node.op)
    try:
        return {f"{node.name}.{k}": w for k, w in op.weights(node.params).items()}
    except (TypeError, ValueError, AttributeError):
        return {}  # params not resolved (the node could not be wired); reported elsewhere


def env_for(batch: int, context: int, frames: int) -> dict[str, int]:
    return {"B": batch, "T": context, "F": frames}


def cost_nodes(g: Graph, batch: int, context: int, frames: int) -> list[NodeCost]:
    env = env_for(batch, context, frames)
    pre, dec = Ctx("prefill", env), Ctx("decode", env)
    out: list[NodeCost] = []
    for node in g.nodes():
        op = registry.get(node.op)
        nc = NodeCost(node.name, node.op, node.group)
        ws = node_weights(node)
        nc.weights = ws
        for w in ws.values():
            if w.tied_to or w.buffer:
                continue
            nc.params += w.numel
            nc.active += w.numel * (w.top_k / w.experts) if w.experts else w.numel
        nc.trainable = 0 if node.frozen else nc.params
        if node.outputs and (node.inputs or node.op == "Input"):
            ins = g.input_types(node)
            nc.flops_prefill = op.flops(node.params, ins, node.outputs, pre)
            nc.flops_decode = op.flops(node.params, ins, node.outputs, dec)
            nc.state = op.state(node.params, ins, node.outputs, pre)
            nc.workspace = op.workspace(node.params, ins, node.outputs, pre)
            nc.saved = op.saved(node.params, ins, node.outputs, pre)
            nc.out_elems = sum(t.numel().eval(env) for t in node.outputs.values())
        out.append(nc)
    return out


def weight_census(costs: list[NodeCost], only: Optional[set] = None) -> dict[tuple, list[int]]:
    """(role, shape) -> [count]: the tensors to store, each once (tied copies skipped)."""
    census: dict[tuple, list[int]] = {}
    for nc in costs:
        if only is not None and nc.name not in only:
            continue
        for w in nc.weights.values():
            if not w.tied_to:
                census.setdefault((w.role, w.shape), [0])[0] += 1
    return census


def weight_bytes(costs: list[NodeCost], fmt: Format, frozen_only: Optional[set] = None,
                 census: Optional[dict] = None) -> float:
    census = census if census is not None else weight_census(costs, frozen_only)
    return sum(n * tensor_bits(fmt, shape, role) for (role, shape), (n,) in census.items()) / 8


def activation_peak(g: Graph, costs: list[NodeCost], nbytes: int = 1) -> int:
    """Peak bytes of live activations over one forward in graph order (a tensor lives until its last consumer;
    model outputs live to the end), plus each op's own workspace while it runs."""
    by = {c.name: c for c in costs}
    order = [n.name for n in g.nodes()]
    pos = {n: i for i, n in enumerate(order)}
    last_use = {}
    outs = {n for n, _ in g.outputs}
    for n in order:
        uses = [pos[s] for s in g.consumers(n)]
        last_use[n] = len(order) if n in outs else (max(uses) if uses else pos[n])
    live = 0
    peak = 0
    frees: dict[int, int] = {}
    for i, n in enumerate(order):
        c = by[n]
        peak = max(peak, live + c.out_elems + c.workspace)
        live += c.out_elems
        frees[last_use[n]] = frees.get(last_use[n], 0) + c.out_elems
        live -= frees.pop(i, 0)
    return peak * nbytes


def grad_path(g: Graph, trainable: set[str]) -> set[str]:
    """Nodes through which gradients flow: trainable ones and everything downstream of one."""
    return set(trainable) | g.descendants(trainable)


def training_activations(costs: list[NodeCost], path: set[str], nbytes: int, recompute: bool) -> int:
    """Bytes saved for backward by the nodes on the gradient path `path` (see grad_path)."""
    by = {c.name: c for c in costs}
    if not recompute:
        return sum((by[n].out_elems + by[n].saved) * nbytes for n in path if n in by)
    # full recomputation: keep each node's output (the next node's input); recompute one node's insides at a time
    largest = max((by[n].saved for n in path if n in by), default=0)
    return sum(by[n].out_elems * nbytes for n in path if n in by) + largest * nbytes


def training_flops(costs: list[NodeCost], trainable: set[str], path: set[str]) -> int:
    total = 0
    for c in costs:
        if c.name in trainable:
            total += 3 * c.flops_prefill
        elif c.name in path:
            total += 2 * c.flops_prefill
        else:
            total += c.flops_prefill
    return total


def all_formats() -> list[str]:
    return list(FORMATS)
