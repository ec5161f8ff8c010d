"""Per-device accounting from the spec alone (compiler/parallel.py), the per-device budget gate and `omnic fit`.

Shards are checked against torch.chunk (what FSDP2 splits with) and a hand count of a tiny spec; impossible layouts
are clear errors (exit 2) before anything runs; `omnic fit`'s largest batch is checked against `omnic check` at that
batch and the next. The runtime side (each rank's real bytes under torchrun) is tests/test_parallel.py.
"""
from __future__ import annotations

import json

import pytest
import torch

from compiler import compile
from compiler.parallel import LayoutError, chunk_rows, local_numel, padded_numel, parse_layout
from tests.tiny_specs import CLI_TINY as TINY, run, write


@pytest.mark.parametrize("shape", [(100, 8), (8, 8), (8,), (1,), (5, 3), (7,)])
@pytest.mark.parametrize("shards", [1, 2, 3, 4, 5, 8])
def test_shards_are_torch_chunks_padded_to_the_first(shape, shards):
    chunks = list(torch.empty(shape).chunk(shards, dim=0))
    chunks += [torch.empty((0,) + shape[1:])] * (shards - len(chunks))      # torch.chunk may return fewer
    assert [c.shape[0] for c in chunks] == chunk_rows(shape[0], shards)
    for r, c in enumerate(chunks):
        assert local_numel(shape, shards, r) == c.numel()
        assert padded_numel(shape, shards) == chunks[0].numel()


def per_device(doc, **kw):
    c = compile(doc, format="fp32", **kw)
    assert c.ok, [d.render() for d in c.diagnostics]
    return c.report["memory"]["training"]["all"]["parallel"]


def test_fsdp_hand_count():
    # trained: embed (100, 8), 3 x (mlp weight (8, 8) + bias (8,)), norm (8,), head (100, 8): 9 tensors, fp32
    two = per_device(TINY, devices=2, strategy="fsdp")
    assert two["units"] == 4                                   # mlp.0, mlp.1, mlp.2 and the root
    assert two["ranks"][0] == {"params": 4 * 912, "grads": 4 * 912, "optimizer": 8 * 912 + 4 * 9}
    three = per_device(TINY, devices=3, strategy="fsdp")
    # 3 shards: rows 34 / 34 / 32 of the 100-row tensors, 3 / 3 / 2 of the 8-row ones; storage padded to the first
    assert three["ranks"][2] == {"params": 4 * 628, "grads": 4 * 628, "optimizer": 8 * 568 + 4 * 9}
    assert three["per_device"]["params"] == 4 * 628
    ddp = per_device(TINY, devices=3, strategy="ddp")
    assert ddp["per_device"]["params"] == 4 * 1824 and ddp["per_device"]["optimizer"] == 8 * 1824 + 4 * 9
    hsdp = per_device(TINY, devices=6, strategy="hsdp:2")      # 2 replicas of 3-way shards: as fsdp on 3
    assert hsdp["shard"] == 3 and hsdp["ranks"] == three["ranks"]


def test_grad_accum_multiplies_flops_not_memory():
    one, four = per_device(TINY, devices=2, grad_accum=1), per_device(TINY, devices=2, grad_accum=4)
    assert four["flops_step"] == 4 * one["flops_step"] and four["per_device"] == one["per_device"]


@pytest.mark.parametrize("strategy, devices, message", [
    ("hsdp:3", 8, "3 replicas do not divide 8 devices"),
    ("fsdb", 2, "did you mean 'fsdp'"),
    ("hsdp", 4, "hsdp needs a replica count"),
    ("ddp:2", 2, "takes no"),
])
def test_bad_strategies(strategy, devices, message, tmp_path):
    with pytest.raises(LayoutError) as e:
        parse_layout(strategy, devices)
    assert message in e.value.message + e.value.hint
    r = run("check", "--devices", devices, "--strategy", strategy, write(tmp_path, TINY))
    assert r.exit_code == 2 and message.split("'")[0] in r.output and "Traceback" not in r.output


def test_more_devices_than_shards_is_an_error(tmp_path):
    r = run("check", "--devices", 16, "--strategy", "fsdp", write(tmp_path, TINY))
    assert r.exit_code == 2
    assert "16-way sharding leaves devices without any part of unit mlp.0" in r.output
    assert "hint: shard over at most 8 devices" in r.output
    ok = run("check", "--devices", 16, "--strategy", "hsdp:2", write(tmp_path, TINY))
    assert ok.exit_code == 0, ok.output


def test_a_stage_that_trains_nothing_is_an_error(tmp_path):
    doc = {**TINY, "stages": {"none": {"freeze": ["embed", "mlp", "norm", "head"]}},
           "budget": {"vram": "1GiB", "mode": "training", "stage": "none", "devices": 2}}
    r = run("check", write(tmp_path, doc))
    assert r.exit_code == 2 and "this training stage trains nothing" in r.output


def test_zero1_needs_a_tensor_per_device(tmp_path):
    r = run("check", "--devices", 10, "--strategy", "zero1", write(tmp_path, TINY))
    assert r.exit_code == 2 and "zero1 over 10 devices needs as many trained tensors; the model trains 9" in r.output


def test_budget_gates_per_device(tmp_path):
    spec = write(tmp_path, TINY)
    r = run("check", "--budget", "40KiB", "--devices", 2, "--strategy", "fsdp", "--format", "fp32", "--json", spec)
    rep = json.loads(r.stdout)[0]["report"]
    dev = rep["memory"]["training"]["all"]["parallel"]["per_device"]
    assert rep["budget"]["figure"] == dev["total"] and rep["budget"]["mode"] == "training"
    assert r.exit_code == (0 if dev["total"] <= 40 * 1024 else 1)
    text = run("check", "--budget", "1KiB", "--devices", 2, spec)
    assert text.exit_code == 1
    assert "memory.training[all].per_device = " in text.stdout and "fsdp on 2 devices" in text.stdout
    assert "per device: fsdp on 2 devices (shards of 2)" in text.stdout


def test_the_spec_budget_takes_the_same_keys(tmp_path):
    doc = {**TINY, "budget": {"vram": "1GiB", "mode": "training", "devices": 2, "strategy": "zero1",
                              "grad_accum": 2}}
    c = compile(write(tmp_path, doc))
    par = c.report["memory"]["training"]["all"]["parallel"]
    assert par["strategy"] == "zero1" and par["grad_accum"] == 2
    assert c.report["budget"]["figure"] == par["per_device"]["total"]
    bad = {**TINY, "budget": {"vram": "1GiB", "mode": "inference", "devices": 2}}
    r = run("check", write(tmp_path, bad, "bad.json"))
    assert r.exit_code == 2 and "budget.mode: a per-device budget (devices / strategy) limits training memory" \
        in r.output
    bad2 = {**TINY, "budget": {"vram": "1GiB", "devices": 4, "strategy": "hsdp:3"}}
    r = run("check", write(tmp_path, bad2, "bad2.json"))
    assert r.exit_code == 2 and "budget.strategy: hsdp:3: 3 replicas do not divide 4 devices" in r.output


def test_fit_largest_batch_is_what_check_says(tmp_path):
    spec = write(tmp_path, TINY)
    r = run("fit", spec, "--budget", "4MiB", "--devices", 2, "--strategy", "fsdp", "--strategy", "ddp",
            "--format", "fp32", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {d["device"] for d in doc["table"]} >= {"H100 SXM 80 GB", "RTX 4090 24 GB", "Apple M2 Ultra 192 GB"}
    for row in doc["largest"]:
        for ctx, b in list(row["largest_batch"].items())[:2]:
            assert b > 0
            at = [compile(spec, format="fp32", batch=x, context=int(ctx), devices=2, strategy=row["strategy"])
                  .report["memory"]["training"]["all"]["parallel"]["per_device"]["total"] for x in (b, b + 1)]
            assert at[0] <= 4 * 2**20 < at[1]
    text = run("fit", spec, "--devices", 2)
    assert text.exit_code == 0 and "largest micro-batch per device" in text.stdout and "step time" in text.stdout
