"""Every op's FLOP rule against torch's counter (`torch.utils.flop_counter`: linear, conv, matmul), generated from the
registry: each example of every node op (tests/op_examples.py), the node run alone on its inputs, attention through
SDPA's math backend (whose matrix products the counter sees; the CPU kernels count 0).

Left out, by what the declaration and the report say (not by op name): nodes that keep decode state (causal
attention: the runtime computes the masked square, the rule counts the causal triangle, the convention of
compiler/ops/transformer.py) and routed experts (grouped products the counter does not see)."""
from __future__ import annotations

import pytest

import compiler
from compiler import registry
from runtime_common.inputs import example_inputs
from tests.op_examples import ENV

torch = pytest.importorskip("torch")
import runtime_torch as rt  # noqa: E402


def _uncountable(node, row: dict) -> str:
    if row["state_elems"]:
        return "decode state (causal attention)"
    if getattr(node.params, "num_experts", None):
        return "routed experts"
    return ""


def test_flop_rule_matches_torch_counter(op_case):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    op, _, spec = op_case
    if registry.get(op).composite:
        pytest.skip("a composite expands into other ops, counted by their own examples")
    c = compiler.compile(spec, batch=ENV["B"], context=ENV["T"], frames=ENV["F"], with_nodes=True)
    assert c.ok, [d.render() for d in c.errors]
    rows = {n["name"]: n for n in c.report["nodes"]}
    reasons = {_uncountable(n, rows[n.name]) for n in c.graph.nodes() if n.op == op} - {""}
    if reasons:
        pytest.skip(", ".join(sorted(reasons)))
    want = {name: row["flops_prefill"] for name, row in rows.items()}
    model = rt.build(c, seed=0)
    env = {k: torch.from_numpy(v) for k, v in example_inputs(c.graph, ENV).items()}
    with torch.no_grad():
        for n in c.graph.nodes():
            if n.op == "Input":
                continue
            args = [env[src] if o == "out" else env[src][o] for src, o in n.inputs]
            if n.op == op:
                with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
                    model.node(n.name)(*args)                            # its module hooks need grad
                assert fc.get_total_flops() == want[n.name], (n.name, fc.get_total_flops(), want[n.name])
            env[n.name] = model.node(n.name)(*args)
