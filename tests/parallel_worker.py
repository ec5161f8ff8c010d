"""One rank of tests/test_parallel.py, started by torchrun (gloo on the CPU): trains tiny shrunk specs under each
layout and writes what it saw to OUT/rank<r>.json for the test to compare with the accounting and with
single-process training. Usage: torchrun --nproc-per-node 2 tests/parallel_worker.py OUT
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

import compiler
from runtime_torch import parallel as P
from tests.shrink import SHRINK

NANO, OCULUS = "specs/nanovlm/default.json", "specs/oculus.json"
ENV = {"B": 2, "T": 12, "F": 1}
STEPS, LR = 3, 1e-2


def compiled(spec: str, strategy: str, world: int, fmt: str = "fp32", **kw):
    return compiler.compile(spec, overrides=SHRINK[spec], format=fmt, batch=ENV["B"], context=ENV["T"],
                            devices=world, strategy=strategy, **kw).raise_for_errors()


def batches(model, rank: int) -> list[dict]:
    """Step s of rank r sees batch seed 100 s + r: the single-process reference concatenates the ranks'."""
    return [P.random_batch(P.inner(model), ENV, seed=100 * s + rank) for s in range(STEPS)]


def run(spec: str, strategy: str, rank: int, world: int, stage=None, recompute=False, mixed=False, accum=1):
    c = compiled(spec, strategy, world, "bf16" if mixed else "fp32", grad_accum=accum)
    model = P.wrap(c.to_torch(seed=0), c, strategy, stage=stage, recompute=recompute, mixed=mixed)
    opt = P.make_optimizer(model, strategy, lr=LR)
    loss_fn = P.default_loss(P.inner(model))
    bs = batches(model, rank)
    losses = [P.train_step(model, opt, [b] * accum, loss_fn) for b in bs]
    out = model(**{k: v for k, v in bs[0].items() if k in P.inner(model).input_names})   # gradients, no step:
    loss_fn(out, bs[0]).backward()                                                       # the peak's holdings
    held = P.local_bytes(model, opt)
    opt.zero_grad(set_to_none=True)
    par = c.report["memory"]["training"][stage or "all"]["parallel"]
    return model, opt, c, {"losses": losses, "held": held, "predicted": par["ranks"][rank % len(par["ranks"])],
                           "predicted_frozen": par["per_device"]["frozen_weights"]}


def full_state(model) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def main(out_dir: str) -> None:
    rank, world, _ = P.init_distributed()
    torch.manual_seed(0)
    res: dict = {}
    for strategy in ("fsdp", "ddp", "zero1", "zero2", "hsdp:2", "hsdp:1"):
        res[strategy] = run(NANO, strategy, rank, world)[3]
    res["fsdp_recompute"] = run(NANO, "fsdp", rank, world, recompute=True)[3]
    res["fsdp_accum"] = run(NANO, "fsdp", rank, world, accum=2)[3]
    res["fsdp_bf16"] = run(NANO, "fsdp", rank, world, mixed=True)[3]
    res["ddp_bf16"] = run(NANO, "ddp", rank, world, mixed=True)[3]
    res["frozen_vision"] = run(NANO, "fsdp", rank, world, stage="frozen_vision")[3]
    res["frozen_vision_bf16"] = run(NANO, "fsdp", rank, world, stage="frozen_vision", mixed=True)[3]

    # a stage trains only what it names: oculus stage1 (the projector), weights before and after
    c = compiled(OCULUS, "fsdp", world)
    before = {k: v.clone() for k, v in c.to_torch(seed=0).state_dict().items()}
    model, opt, c, r = run(OCULUS, "fsdp", rank, world, stage="stage1")
    after = full_state(model)
    r["changed"] = sorted(k for k, v in after.items() if not torch.equal(v, before[k]))
    res["oculus_stage1"] = r

    # checkpoint round trip: save, train on, load into a fresh wrapping, the same weights and the same next loss
    model, opt, c, _ = run(NANO, "fsdp", rank, world)
    ckpt = os.path.join(out_dir, "ckpt")
    P.save_checkpoint(model, opt, ckpt)
    P.export_safetensors(model, os.path.join(out_dir, "model.safetensors"))
    saved = full_state(model)
    loss_fn = P.default_loss(P.inner(model))
    nxt = [P.random_batch(P.inner(model), ENV, seed=1000 + rank)]
    loss_a = P.train_step(model, opt, nxt, loss_fn)
    fresh = P.wrap(c.to_torch(seed=1), c, "fsdp", mixed=False)
    fresh_opt = P.make_optimizer(fresh, "fsdp", lr=LR)
    P.load_checkpoint(fresh, fresh_opt, ckpt)
    loaded = full_state(fresh)
    res["dcp"] = {"same_weights": all(torch.equal(saved[k], loaded[k]) for k in saved) and saved.keys() == loaded.keys(),
                  "loss_after_save": loss_a, "loss_after_load": P.train_step(fresh, fresh_opt, nxt, loss_fn)}
    if rank == 0:
        torch.save({k: v.cpu() for k, v in saved.items()}, os.path.join(out_dir, "saved.pt"))
    # the example, as docs/scale-out.md runs it, on the tiny spec: two steps, a checkpoint and the export
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    import train_distributed
    train_distributed.main(["--spec", NANO, "--steps", "2", "--grad-accum", "2", "--recompute", "--out",
                            os.path.join(out_dir, "example")]
                           + [a for k, v in SHRINK[NANO].items() for a in ("--set", f"{k}={json.dumps(v)}")])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
