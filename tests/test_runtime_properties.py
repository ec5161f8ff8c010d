"""Random valid specs (tests/strategies.py) built and run in both runtimes: the instantiated parameter count equals
the compiler's, every output's shape equals the inferred one, and torch's outputs equal MLX's on the same weights.

Only specs whose compiled activation peak at the test's sizes (batch B, T tokens) is at most `RUN_BYTES` are run.
The grammar also draws valid specs far larger than that: an image input left undeclared is the compiler's implied
(B, C, 224, 224), and a patch size, kernel or stride of 1 over it gives 50,177 tokens, so one attention layer's
scores are B x heads x 50,177^2 floats (20 GB at B = 2; MLX's CPU attention materialises them, and MLX on CPU dies
with a segmentation fault, not an exception, when an allocation fails). Shrinking such a failure re-runs it over and
over, and patch, kernel and stride shrink towards 1, i.e. towards more tokens: an xdist worker once grew to 21 GB.
Such specs are rejected (neither run nor shrunk into) on the compiler's own figure, below."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, example, given, note

import compiler
from tests.shrink import make_inputs
from tests.strategies import Drawn, fast, specs

torch = pytest.importorskip("torch")
mx = pytest.importorskip("mlx.core")

import runtime_mlx  # noqa: E402
import runtime_torch as rt  # noqa: E402

ENV = {"B": 2, "T": 5, "F": 2}
RUN_BYTES = 64 * 2**20      # 99% of drawn specs peak under 6 MB (4,000 draws); the rest at 0.5-20 GB


def activation_peak(spec: dict) -> int:
    """fp32 bytes of live activations (attention scores included) at the test's sizes, from the compiled report."""
    c = compiler.compile(spec, batch=ENV["B"], context=ENV["T"], frames=ENV["F"])
    assert c.ok, [d.render() for d in c.errors]
    return c.report["memory"]["activation_peak"]["fp32"]


# The spec a random run drew (seed 4 of the long profile, its 237th draw) that took MLX's attention to 20 GB: patch 1
# over the implied 224 x 224 image, 50,177 tokens into causal attention.
HUGE = {"name": "huge", "layers": [
    {"id": "patchembed0", "type": "PatchEmbed", "params": {"embed_dim": 47, "patch_size": 1, "in_channels": 3,
                                                            "cls_token": True}},
    {"id": "transformerblock1", "type": "TransformerBlock",
     "params": {"num_heads": 1, "num_kv_heads": 1, "ff_dim": 20, "mlp": "gelu", "norm": "rmsnorm", "causal": True,
                "attn_bias": [], "qk_norm": True}},
    {"id": "classificationhead2", "type": "ClassificationHead", "params": {"num_classes": 9}}]}


def _np(x):
    return x.detach().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x.astype(mx.float32))


@fast(30)
@given(specs(max_layers=6))
@example(Drawn(HUGE))                                       # refused before it is built (was: 20 GB, then a crash)
def test_random_specs_run_in_both_runtimes_as_compiled(drawn: Drawn):
    note(json.dumps(drawn.spec))
    assume(activation_peak(drawn.spec) <= RUN_BYTES)
    run_in_both(drawn.spec)


def run_in_both(spec: dict):
    """Build `spec` in torch and MLX from one seed, run both on the same inputs at ENV and compare with the report."""
    c = compiler.compile(spec)
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


def test_the_memory_bound_refuses_the_huge_draw_and_keeps_its_structure_runnable():
    """The bound is the compiler's figure and it is what separates the 20 GB draw from a runnable one: the same spec
    over a declared 16 x 16 image (257 tokens) is under it and runs in both runtimes."""
    peak = activation_peak(HUGE)
    assert peak > 2 * 50_177 ** 2 * 4 > RUN_BYTES               # the (B, 1, T, T) fp32 scores alone
    small = json.loads(json.dumps(HUGE))
    small["inputs"] = [{"name": "x", "kind": "image", "shape": ["B", 3, 16, 16]}]
    assert activation_peak(small) <= RUN_BYTES
    run_in_both(small)
