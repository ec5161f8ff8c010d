"""Random valid specs (tests/strategies.py) built and run in both runtimes: the instantiated parameter count equals
the compiler's, every output's shape equals the inferred one, and torch's outputs equal MLX's on the same weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, note

import compiler
from tests.shrink import make_inputs
from tests.strategies import Drawn, fast, specs

torch = pytest.importorskip("torch")
mx = pytest.importorskip("mlx.core")

import runtime_mlx  # noqa: E402
import runtime_torch as rt  # noqa: E402

ENV = {"B": 2, "T": 5, "F": 2}


def _np(x):
    return x.detach().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x.astype(mx.float32))


@fast(30)
@given(specs(max_layers=6))
def test_random_specs_run_in_both_runtimes_as_compiled(drawn: Drawn):
    note(json.dumps(drawn.spec))
    c = compiler.compile(drawn.spec)
    assert c.ok, [d.render() for d in c.errors]
    tm = rt.build(c, seed=1).eval()
    assert sum(p.numel() for p in tm.parameters()) == c.report["params"]["total"]
    mm = runtime_mlx.build(c, seed=1)                    # the same seed gives the same weights in both runtimes
    from mlx.utils import tree_flatten
    assert sum(v.size for _, v in tree_flatten(mm.parameters())) == c.report["params"]["total"]
    inputs = make_inputs(c, seed=2, env=ENV)
    with torch.no_grad():
        t_out = tm(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    m_out = mm(**{k: mx.array(v) for k, v in inputs.items()})
    for name, t in t_out.items():
        node, _, out = name.partition(".") if name not in c.graph else (name, "", "out")
        want = c.graph[node if name not in c.graph else name].outputs[out or "out"]
        assert tuple(t.shape) == tuple(d.eval(ENV) for d in want.shape), name
        a, b = _np(t), _np(m_out[name])
        scale = max(1.0, float(np.abs(a).max()))
        assert np.abs(a - b).max() <= 1e-4 * scale, (name, float(np.abs(a - b).max()))
