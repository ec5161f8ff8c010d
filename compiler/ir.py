"""The typed layer graph: tensor types, nodes, and the graph over networkx.

A `Graph` is a networkx.DiGraph whose vertices are dotted node names (`lm.model.layers.3`) carrying a `Node`, and
whose edges carry the producer's output name and whether the edge was inferred (not written in the spec).
Model inputs are nodes of op `Input`. Shapes use the vocabulary of `dims.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Optional

from .dims import Dim, shape_str

# Kinds of tensors, used by wiring inference to decide what a layer can consume.
IMAGE = "image"      # (B, C, H, W) images, feature maps and latent maps
VIDEO = "video"      # (B, F, C, H, W)
IDS = "ids"          # (B, T) integer token ids
TOKENS = "tokens"    # (B, N, D) sequences of vectors; `grid`/`prefix` say where they came from
VECTOR = "vector"    # (B, D) one vector per example (pooled features, timestep embeddings)
SCALAR = "scalar"    # (B,) one number per example (diffusion time)
KINDS = (IMAGE, VIDEO, IDS, TOKENS, VECTOR, SCALAR)


def in_scope(name: str, ids) -> bool:
    """Whether node `name` is one of the layer ids `ids` or a part of one (`lm` covers `lm.model.layers.3`)."""
    return any(name == i or name.startswith(i + ".") for i in ids)


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    kind: str = TOKENS
    dtype: str = "float"                      # "float" (the compute dtype) or "int"
    grid: Optional[tuple[int, int]] = None    # tokens laid out on an h x w grid after `prefix` special tokens
    prefix: int = 0                           # CLS / register tokens in front of the grid tokens
    positioned: bool = False                  # carries position information (learned positions or RoPE applied)

    @staticmethod
    def make(shape, kind=TOKENS, dtype="float", grid=None, prefix=0) -> "TensorType":
        return TensorType(tuple(Dim.of(d) for d in shape), kind, dtype, tuple(grid) if grid else None, prefix)

    @property
    def width(self) -> Optional[int]:
        """Feature width: channels for images, last dim for tokens/vectors."""
        if self.kind == IMAGE and len(self.shape) == 4:
            d = self.shape[1]
        elif self.kind == VIDEO and len(self.shape) == 5:
            d = self.shape[2]
        elif self.kind in (TOKENS, VECTOR) and self.shape:
            d = self.shape[-1]
        else:
            return None
        return d.const if d.is_const else None

    def with_shape(self, shape) -> "TensorType":
        return replace(self, shape=tuple(Dim.of(d) for d in shape))

    def numel(self) -> Dim:
        return self._numel

    def rows(self) -> Dim:
        """Product of all dims but the last: how many vectors a Linear on the last dim sees."""
        return self._rows

    @cached_property
    def _numel(self) -> Dim:
        return self._rows * self.shape[-1] if self.shape else Dim.of(1)

    @cached_property
    def _rows(self) -> Dim:
        n = Dim.of(1)
        for d in self.shape[:-1]:
            n = n * d
        return n

    def __str__(self) -> str:
        return shape_str(self.shape)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"shape": [str(d) if not d.is_const else d.const for d in self.shape],
                               "kind": self.kind, "dtype": self.dtype}
        if self.grid:
            out["grid"] = list(self.grid)
        if self.prefix:
            out["prefix"] = self.prefix
        return out


@dataclass
class Node:
    name: str                              # dotted, unique; module nesting follows it
    op: str                                # registry name
    params: Any                            # the op's params model, resolved by the compiler
    path: tuple = ()                       # JSON path of the layer in the spec (for diagnostics)
    inputs: list[tuple[str, str]] = field(default_factory=list)   # (producer node, output name) per slot
    inferred: list[bool] = field(default_factory=list)            # per input: wired by inference?
    outputs: dict[str, TensorType] = field(default_factory=dict)  # filled by shape inference
    frozen: bool = False
    group: Optional[str] = None            # repeated blocks share a group ("lm.model.layers") for collapsing
    label: str = ""                        # the layer's note, for people
    stages_trainable: frozenset = frozenset()  # training stages in which this node trains

    @property
    def out(self) -> TensorType:
        return next(iter(self.outputs.values()))


class Graph:
    """Nodes in insertion order with their edges; `g` is the same graph as a networkx.DiGraph.

    The passes use the small adjacency kept here (fast, and importing networkx costs a tenth of a second that a
    command-line check should not pay); `g` is built on first use and rebuilt after a change, for callers who want
    networkx's algorithms. Node attribute `node` holds the Node; edge attributes `out` and `inferred`.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}
        self._succ: dict[str, dict[str, dict]] = {}
        self._pred: dict[str, dict[str, dict]] = {}
        self._nx = None
        self.order: list[str] = []
        self.outputs: list[tuple[str, str]] = []   # model outputs (node, output name)

    # --- building -----------------------------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        if node.name in self._nodes:
            raise KeyError(f"duplicate node name {node.name}")
        self._nodes[node.name] = node
        self._succ[node.name], self._pred[node.name] = {}, {}
        self.order.append(node.name)
        self._nx = None
        return node

    def add_edge(self, src: str, dst: str, out: str = "out", inferred: bool = False) -> None:
        data = {"out": out, "inferred": inferred}
        self._succ[src][dst] = data
        self._pred[dst][src] = data
        self._nx = None

    def connect(self, node: Node, src: str, out: str = "out", inferred: bool = False) -> None:
        node.inputs.append((src, out))
        node.inferred.append(inferred)
        self.add_edge(src, node.name, out, inferred)

    # --- reading ------------------------------------------------------------------------------------------------
    @property
    def g(self):
        """The graph as a networkx.DiGraph (built on demand)."""
        if self._nx is None:
            import networkx as nx
            g = nx.DiGraph()
            for name, node in self._nodes.items():
                g.add_node(name, node=node)
            for u, succ in self._succ.items():
                for v, d in succ.items():
                    g.add_edge(u, v, **d)
            self._nx = g
        return self._nx

    def __getitem__(self, name: str) -> Node:
        return self._nodes[name]

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def names(self) -> list[str]:
        """Node names in insertion order."""
        return list(self._nodes)

    def nodes(self) -> list[Node]:
        return [self._nodes[n] for n in self.order]

    def input_types(self, node: Node) -> list[TensorType]:
        return [self[src].outputs[o] for src, o in node.inputs]

    def consumers(self, name: str) -> list[str]:
        return list(self._succ[name])

    def producers(self, name: str) -> list[str]:
        return list(self._pred[name])

    def inferred_edges(self) -> list[tuple[str, str, str]]:
        return [(u, v, d["out"]) for u in self._nodes for v, d in self._succ[u].items() if d.get("inferred")]

    # --- algorithms ---------------------------------------------------------------------------------------------
    def descendants(self, sources) -> set[str]:
        """Every node reachable from any of `sources` (the sources excluded unless reachable)."""
        seen: set[str] = set()
        stack = [v for s in sources for v in self._succ[s]]
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self._succ[n])
        return seen

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self._pred[name])
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self._pred[n])
        return seen

    def find_cycle(self) -> Optional[list[str]]:
        """One cycle as [a, b, ..., a], or None."""
        color: dict[str, int] = {}
        for root in self._nodes:
            if root in color:
                continue
            path, stack = [], [(root, iter(self._succ[root]))]
            color[root] = 1
            path.append(root)
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    color[node] = 2
                    stack.pop()
                    path.pop()
                elif color.get(nxt) == 1:
                    return path[path.index(nxt):] + [nxt]
                elif nxt not in color:
                    color[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, iter(self._succ[nxt])))
        return None

    def topo_order(self, key) -> list[str]:
        """A topological order; among ready nodes the smallest `key(name)` first."""
        import heapq
        indeg = {n: len(p) for n, p in self._pred.items()}
        ready = [(key(n), n) for n, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            _, n = heapq.heappop(ready)
            out.append(n)
            for v in self._succ[n]:
                indeg[v] -= 1
                if indeg[v] == 0:
                    heapq.heappush(ready, (key(v), v))
        return out
