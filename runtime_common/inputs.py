"""Valid example inputs of a compiled graph, for tests, ONNX export, benchmarks and `model.example_inputs()`: the
one input generator (numpy, so both runtimes and the exporter share the values).

    inputs = example_inputs(graph, {"B": 2, "T": 12, "F": 3}, seed=0)     # {input name: np.ndarray}

Floats are standard normal, scalar inputs (times) uniform in [0, 1). Token ids are valid by their consumers'
declarations (compiler/registry.py): drawn below every consuming op's `ids_bound` (a vocabulary, an image
placeholder id), then made valid by each consumer's `place_ids` (MergeImageTokens writes its placeholders).
`sizes` picks symbol values long enough for what the consumers need (their `ids_reserved`: image placeholders).
"""
from __future__ import annotations

from typing import Any

from compiler import registry

DEFAULT_SIZES = {"B": 2, "T": 8, "F": 2}


def sizes(graph, want: dict[str, int]) -> dict[str, int]:
    """Symbol values for example inputs: `want`, with T long enough for the positions consumers of the ids fill
    themselves (their `ids_reserved`: image placeholders) plus `want["T"]` text tokens around them."""
    out = dict(want)
    for n in graph.nodes():
        if n.op != "Input":
            reserved = registry.get(n.op).ids_reserved(n.params, graph.input_types(n), {**out, "T": 1})
            out["T"] = max(out["T"], reserved + want["T"]) if reserved else out["T"]
    return out


def example_inputs(graph, env: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """One numpy array per model input at the sizes `env` (module docstring)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for n in graph.nodes():
        if n.op != "Input":
            continue
        shape = [d.eval(env) for d in n.out.shape]
        if n.out.dtype == "int":
            users = [(registry.get(graph[c].op), graph[c]) for c in graph.consumers(n.name)]
            bounds = [b for op, u in users if (b := op.ids_bound(u.params)) is not None]
            ids = rng.integers(0, max(1, min(bounds, default=2)), size=shape)
            for op, u in users:
                op.place_ids(u.params, ids, graph.input_types(u), env)
            out[n.name] = ids.astype(np.int64)
        elif n.out.kind == "scalar":
            out[n.name] = rng.random(shape).astype(np.float32)
        else:
            out[n.name] = rng.standard_normal(shape).astype(np.float32)
    return out
