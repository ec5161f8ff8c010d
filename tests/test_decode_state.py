"""The decode state an op declares (`Op.decode_state`) is what both runtimes' caches hold, for every op example; and
`model.example_inputs()` gives valid inputs for every example in both runtimes."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler import registry
from tests.op_examples import CASES, ENV

torch = pytest.importorskip("torch")
import runtime_torch as rt  # noqa: E402
from runtime_torch.cache import LayerCache  # noqa: E402

STATEFUL = [(op, i, s) for op, i, s in CASES
            if any(registry.get(n.op).decode_state(n.params, g.input_types(n))
                   for g in [compiler.compile(s).graph] for n in g.nodes() if n.op != "Input")]


def _compiled(spec):
    c = compiler.compile(spec, batch=ENV["B"], context=ENV["T"], frames=ENV["F"])
    assert c.ok, [d.render() for d in c.errors]
    return c


def _declared(c, node) -> int:
    """Elements the declaration says the node keeps after its input (B, T, ...) ran through it."""
    ins = c.graph.input_types(node)
    states = registry.get(node.op).decode_state(node.params, ins)
    B, T = (d.eval(ENV) for d in ins[0].shape[:2])
    return B * sum(s.numel(T) for s in states)


def _node_inputs(model, c) -> dict[str, tuple]:
    """The input tensors of every stateful node in one forward on example inputs."""
    seen: dict[str, tuple] = {}
    hooks = [model.node(n.name).register_forward_pre_hook(lambda m, a, name=n.name: seen.setdefault(name, a))
             for n in c.graph.nodes() if n.op != "Input" and _declared(c, n)]
    with torch.no_grad():
        model(**model.example_inputs(ENV))
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("op,i,spec", STATEFUL, ids=[f"{op}-{i}" for op, i, _ in STATEFUL])
def test_declared_state_is_what_the_caches_hold(op, i, spec):
    c = _compiled(spec)
    model = rt.build(c, seed=0)
    found = _node_inputs(model, c)
    assert found, "the example has a stateful node"
    for name, xs in found.items():
        cache = LayerCache()
        with torch.no_grad():
            model.node(name)(*xs, cache=cache)
        held = sum(t.numel() for t in cache.tensors())
        assert held == _declared(c, c.graph[name]), name
        assert cache.seen == xs[0].shape[1]
    mx = pytest.importorskip("mlx.core")
    import runtime_mlx
    from runtime_mlx.cache import LayerCache as MLXCache
    mm = runtime_mlx.build(c, seed=0)
    for name, xs in found.items():
        cache = MLXCache()
        mm.node(name)(*[mx.array(x.numpy()) for x in xs], cache=cache)
        assert sum(a.size for a in cache.arrays()) == _declared(c, c.graph[name]), name


def test_example_inputs_are_valid_in_both_runtimes(op_case):
    """`model.example_inputs()` runs every example; ids stay below every consumer's bound; both runtimes get the same
    values (one generator), so their outputs agree."""
    c = _compiled(op_case[2])
    model = rt.build(c, seed=0)
    xs = model.example_inputs(ENV, seed=1)
    assert set(xs) == set(model.input_names)
    for name, x in xs.items():
        if not x.is_floating_point():
            bounds = [registry.get(c.graph[u].op).ids_bound(c.graph[u].params) for u in c.graph.consumers(name)]
            assert int(x.max()) < min([b for b in bounds if b is not None], default=2) or any(
                c.graph[u].op == "MergeImageTokens" for u in c.graph.consumers(name))
    with torch.no_grad():
        want = model(**xs)
    mx = pytest.importorskip("mlx.core")
    import runtime_mlx
    mm = runtime_mlx.build(c, seed=0)
    mxs = mm.example_inputs(ENV, seed=1)
    assert all(np.array_equal(np.array(mxs[k]), xs[k].numpy()) for k in xs)
    got = mm(**mxs)
    for k, v in want.items():
        np.testing.assert_allclose(np.array(got[k]), v.numpy(), atol=1e-3, rtol=1e-3, err_msg=k)
