"""compiler/activations.py's table against transformers' ACT2FN: every ACT2FN name omnic reads computes, in both
runtimes, what transformers' function of that name computes (fp32, on values around the kinks and tails); every MLP
kind has a function in both runtimes; a config naming a relu / relu2 MLP imports and matches transformers' logits."""
from __future__ import annotations

import numpy as np
import pytest

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import torch
from transformers.activations import ACT2FN

from compiler.activations import ACTIVATIONS, GATED_KINDS, MLP_KINDS, activation_of, from_hf
from runtime_mlx.kernels import ACT as MLX_ACT
from runtime_torch.kernels import ACT as TORCH_ACT

X = np.concatenate([np.linspace(-12, 12, 2001), [-1e-3, 0.0, 1e-3, 5.999, 6.0, 6.001]]).astype(np.float32)
PAIRS = [(ours, hf) for ours, names in ACTIVATIONS.items() for hf in names]


@pytest.mark.parametrize("ours, hf", PAIRS, ids=[f"{o}-{h}" for o, h in PAIRS])
def test_runtimes_compute_transformers_activation(ours, hf):
    want = ACT2FN[hf](torch.from_numpy(X)).numpy()
    got_t = TORCH_ACT[ours](torch.from_numpy(X)).numpy()
    got_m = np.array(MLX_ACT[ours](mx.array(X)))
    tol = 1e-6 * np.maximum(1.0, np.abs(want))
    assert (np.abs(got_t - want) <= tol).all(), float(np.abs(got_t - want).max())
    assert (np.abs(got_m - want) <= tol).all(), float(np.abs(got_m - want).max())
    assert from_hf(hf, gated=False) == ours and activation_of(from_hf(hf, gated=True)) == ours


def test_every_mlp_kind_has_both_runtimes():
    assert set(TORCH_ACT) == set(MLX_ACT) == set(ACTIVATIONS)
    assert {activation_of(k) for k in MLP_KINDS} == set(ACTIVATIONS)
    assert GATED_KINDS["silu"] == "swiglu" and len(set(GATED_KINDS.values())) == len(GATED_KINDS)


def test_unknown_activation_is_refused_with_the_supported_list():
    from compiler.importers import spec_from_hf_config
    with pytest.raises(ValueError, match=r"hidden_act='xielu'.*relu2"):
        spec_from_hf_config({"model_type": "llama", "hidden_act": "xielu"})
