"""Data-parallel training under torchrun (gloo, world size 2) against the accounting and one-process training.

tests/parallel_worker.py runs every layout once (one torchrun launch for the module); each rank reports what its
storages hold (runtime_torch.parallel.local_bytes: distinct storages of its parameters, gradients and AdamW state),
its losses, and the checkpoint round trip. Here those are compared with
  * compiler.parallel's prediction for that rank: equal to the byte (FSDP2's padding included);
  * the same model trained in this process on the ranks' batches concatenated, with plain AdamW: the losses
    within fp32 tolerance;
  * the stage's named layers: the only weights that changed;
  * the exported safetensors file: loaded by both runtimes, equal to the gathered weights and to the DCP shards.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import compiler
import runtime_torch
from runtime_torch import parallel as P
from tests import parallel_worker as W
from tests.shrink import ROOT, SHRINK

WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           os.path.join(ROOT, "tests", "parallel_worker.py"), str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    res = [json.load(open(out / f"rank{r}.json")) for r in range(WORLD)]
    return out, res


def reference_losses(spec: str, stage=None) -> list[float]:
    """One process, plain AdamW, each step on the ranks' batches concatenated (what data parallelism averages)."""
    c = W.compiled(spec, "ddp", WORLD)
    model = c.to_torch(seed=0)
    P.apply_stage(model, c, stage)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=W.LR)
    loss_fn = P.default_loss(model)
    per_rank = [[P.random_batch(model, W.ENV, seed=100 * s + r) for s in range(W.STEPS)] for r in range(WORLD)]
    losses = []
    for s in range(W.STEPS):
        batch = {k: torch.cat([per_rank[r][s][k] for r in range(WORLD)]) for k in per_rank[0][s]}
        loss = loss_fn(model(**{k: v for k, v in batch.items() if k in model.input_names}), batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


LAYOUTS = ["fsdp", "ddp", "zero1", "zero2", "hsdp:2", "hsdp:1", "fsdp_recompute", "fsdp_accum", "fsdp_bf16",
           "ddp_bf16", "frozen_vision", "frozen_vision_bf16", "oculus_stage1"]


@pytest.mark.parametrize("case", LAYOUTS)
def test_each_rank_holds_what_the_accounting_predicts(ranks, case):
    for r in ranks[1]:
        got, want = r[case]["held"], r[case]["predicted"]
        assert {k: got[k] for k in want} == want
        assert got["frozen_weights"] == r[case]["predicted_frozen"]
    if case.startswith("frozen_vision"):     # held in the storage format: bf16 under mixed precision
        fp32 = ranks[1][0]["frozen_vision"]["held"]["frozen_weights"]
        assert fp32 > 0 and ranks[1][0]["frozen_vision_bf16"]["held"]["frozen_weights"] * 2 == fp32


@pytest.fixture(scope="module")
def reference():
    return {None: reference_losses(W.NANO), "frozen_vision": reference_losses(W.NANO, "frozen_vision")}


@pytest.mark.parametrize("case", ["fsdp", "ddp", "zero1", "zero2", "hsdp:2", "hsdp:1", "fsdp_recompute",
                                  "fsdp_accum", "frozen_vision"])
def test_loss_equals_one_process_training(ranks, reference, case):
    want = reference["frozen_vision" if case == "frozen_vision" else None]
    for r in ranks[1]:
        np.testing.assert_allclose(r[case]["losses"], want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["fsdp_bf16", "ddp_bf16"])
def test_mixed_precision_trains_close_to_fp32(ranks, reference, case):
    got = ranks[1][0][case]["losses"]
    np.testing.assert_allclose(got, reference[None], rtol=2e-3)
    assert got != reference[None]          # bf16 compute really ran


def test_a_stage_trains_only_what_it_names(ranks):
    c = compiler.compile(W.OCULUS, overrides=SHRINK[W.OCULUS])
    model = c.to_torch(seed=0)
    P.apply_stage(model, c, "stage1")         # the spec: "stage1": {"train": ["projector"]}
    want = ["projector.fc1.bias", "projector.fc1.weight", "projector.fc2.bias", "projector.fc2.weight"]
    assert sorted(k for k, p in model.named_parameters() if p.requires_grad) == want
    for r in ranks[1]:
        assert r["oculus_stage1"]["changed"] == want


def test_checkpoint_round_trip(ranks):
    for r in ranks[1]:
        assert r["dcp"]["same_weights"]
        assert r["dcp"]["loss_after_load"] == r["dcp"]["loss_after_save"]


def test_export_loads_in_torch_and_mlx(ranks):
    import runtime_mlx
    import mlx.core as mx
    out = ranks[0]
    saved = torch.load(out / "saved.pt")
    path = out / "model.safetensors"
    c = compiler.compile(W.NANO, overrides=SHRINK[W.NANO]).raise_for_errors()
    tm = c.to_torch(seed=7)
    runtime_torch.load_weights(tm, path)
    for k, v in tm.state_dict().items():
        assert torch.equal(v, saved[k]), k
    mm = runtime_mlx.build(c, seed=7)
    runtime_mlx.load_weights(mm, path)
    from runtime_mlx.weights import torch_layout_weights
    back = torch_layout_weights(mm)           # MLX's arrays (channels-last kernels) turned back to torch layout
    assert back.keys() == {k for k in saved if k not in tm.ties}
    for k, v in back.items():
        np.testing.assert_array_equal(np.array(v.astype(mx.float32)), saved[k].numpy(), err_msg=k)
    # the DCP shards, written by each rank, hold the same weights as the gathered export
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    dcp_to_torch_save(out / "ckpt", out / "ckpt.pt")
    shards = torch.load(out / "ckpt.pt")["model"]
    for k, v in saved.items():
        assert torch.equal(shards[k], v), k


def test_the_example_trains_and_exports(ranks):
    out = ranks[0] / "example"
    c = compiler.compile(W.NANO, overrides=SHRINK[W.NANO]).raise_for_errors()
    model = c.to_torch(init=False, device="meta")
    loaded = runtime_torch.load_weights(model, out / "model.safetensors")     # strict: raises on any mismatch
    assert loaded.missing == [] and loaded.unexpected == []
    init = c.to_torch(seed=0).state_dict()        # the example starts from seed 0 and trains every tensor
    assert all(not torch.equal(v, init[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    assert (out / "checkpoint" / ".metadata").exists()
