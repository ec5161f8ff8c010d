"""A compiled graph as plain Python data (dicts, lists, strings, numbers) and back.

This is what generated code holds (`runtime_torch/emit.py` and `runtime_mlx/emit.py` write it with repr, so it is a
literal that `ast.literal_eval` reads) and what `runtime_torch.from_graph_data` / `runtime_mlx.from_graph_data`
rebuild a model from:

    {"omnic_graph": 1,
     "nodes": [{"name": "lm_head", "op": "Linear", "params": {...resolved params...},
                "inputs": [["layers.1", "out"]], "outputs": {"out": {"shape": ["B", "T", 11], "kind": "tokens"}},
                "frozen": False}, ...],            # in graph order (topological)
     "outputs": [["lm_head", "out"]]}

Reading it back trusts nothing: each params dict is validated again by its op's Params model (strict, unknown keys
refused) and must be a fixed point of the op's `resolve` on its inputs (no contradiction reported), each input must
name an earlier node's output, and each node's recorded output types must be those its op's shape rule gives.
Part of the compiler core: it imports neither torch nor mlx, so a generated MLX module needs no torch.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from compiler import registry
from compiler.dims import Dim
from compiler.ir import Graph, Node, TensorType

VERSION = 1


def to_data(graph: Graph) -> dict[str, Any]:
    nodes = [{
        "name": n.name,
        "op": n.op,
        "params": n.params.model_dump(mode="json"),
        "inputs": [[src, out] for src, out in n.inputs],
        "outputs": {k: _type_data(t) for k, t in n.outputs.items()},
        "frozen": n.frozen,
    } for n in graph.nodes()]
    data = {"omnic_graph": VERSION, "nodes": nodes, "outputs": [[n, o] for n, o in graph.outputs]}
    _check_plain(data, "graph")
    return data


def _check_plain(x: Any, where: str) -> None:
    """Only literals that repr() writes back exactly: no inf / nan, no objects."""
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"{where}: {x} cannot be written as a literal")
    elif not (x is None or isinstance(x, (str, bool, int))):
        raise TypeError(f"{where}: {type(x).__name__} is not plain data")


def _type_data(t: TensorType) -> dict[str, Any]:
    """Every field of the type (kind always, the others when not at their defaults), tuples as lists, dims as int or "T+64"."""
    out: dict[str, Any] = {"shape": [d.const if d.is_const else str(d) for d in t.shape]}
    for f in fields(TensorType)[1:]:
        v = getattr(t, f.name)
        if v != f.default or f.name == "kind":
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _type(d: dict) -> TensorType:
    rest = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "shape"}
    return TensorType(tuple(Dim.of(x) for x in d["shape"]), **rest)


def from_data(data: dict[str, Any]) -> Graph:
    if not isinstance(data, dict) or data.get("omnic_graph") != VERSION:
        raise ValueError(f"not omnic graph data of version {VERSION}")
    g = Graph()
    for k, d in enumerate(data["nodes"]):
        where = f"nodes[{k}] ({d.get('name')!r})"
        op = registry.get(d["op"])
        params = op.Params.model_validate(d["params"])
        node = g.add(Node(d["name"], d["op"], params, frozen=bool(d.get("frozen", False))))
        for src, out in d["inputs"]:
            if src not in g or src == node.name or out not in g[src].outputs:
                raise ValueError(f"{where}: input {src}.{out} is not the output of an earlier node")
            g.connect(node, src, out)
        node.outputs = {o: _type(t) for o, t in d["outputs"].items()}
        ins = g.input_types(node)
        errors: list[str] = []
        if d["op"] != "Input" and op.resolve(params, ins, lambda f, m, h=None: errors.append(m)) != params:
            errors.append("the params are not those the compiler resolves from the inputs")
        if errors:
            raise ValueError(f"{where}: " + "; ".join(errors))
        rule = op.shape(params, ins)
        if rule != node.outputs:
            raise ValueError(f"{where}: recorded outputs {node.outputs} are not what {d['op']} gives: {rule}")
    for n, o in data["outputs"]:
        if n not in g or o not in g[n].outputs:
            raise ValueError(f"model output {n}.{o} is not a node output")
        g.outputs.append((n, o))
    return g
