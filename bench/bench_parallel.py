"""Measured per-rank training memory against omnic's predicted per-device peak (compiler/parallel.py).

    torchrun --nproc-per-node N bench/bench_parallel.py                       # on GPUs: NCCL, bf16 mixed precision
    torchrun --nproc-per-node 2 bench/bench_parallel.py --cpu --case nano-fsdp  # CPU smoke: gloo, fp32

Each case builds a shipped spec (overrides in CASES), wraps it with runtime_torch.parallel, and runs a few training
steps on random data. Per rank it prints:
  * at rest after the steps (parameters and AdamW state: runtime_torch.parallel.local_bytes; the gradients are
    freed by the step) against the predicted holdings of that rank: these must be equal;
  * the peak of the last step (the first ones create the AdamW state): on a GPU `torch.cuda.max_memory_allocated` (tensor memory, no CUDA context), on the
    CPU the peak that torch's own memory tracker records (torch.distributed._tools FSDPMemTracker for the sharded
    strategies, MemTracker for ddp / zero1), against the predicted per-device total, with the ratio (goal: within
    10%).
The prediction and the run use the same micro-batch, context, stage and recomputation. Nothing here is timed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import compiler  # noqa: E402
from runtime_torch import parallel as P  # noqa: E402

# name -> (spec, overrides, batch, context, strategy, recompute)
_NANO_SMALL = {"layers[0].params.layers": 2, "layers[5].params.depth": 4}
CASES = {
    "nano-ddp": ("specs/nanovlm/original_small.json", {}, 4, 512, "ddp", False),
    "nano-zero1": ("specs/nanovlm/original_small.json", {}, 4, 512, "zero1", False),
    "nano-zero2": ("specs/nanovlm/original_small.json", {}, 4, 512, "zero2", False),
    "nano-fsdp": ("specs/nanovlm/original_small.json", {}, 4, 512, "fsdp", False),
    "nano-fsdp-recompute": ("specs/nanovlm/original_small.json", {}, 4, 512, "fsdp", True),
    "oculus-fsdp": ("specs/oculus.json", {}, 1, 512, "fsdp", False),
    "oculus-fsdp-recompute": ("specs/oculus.json", {}, 2, 512, "fsdp", True),
}
CPU_OVERRIDES = _NANO_SMALL      # the CPU smoke run: a shallower nanoVLM so a loaded 2-core machine copes


def measure(name: str, args, rank: int, world: int, device: torch.device) -> dict:
    spec, over, batch, context, strategy, recompute = CASES[name]
    cpu = device.type == "cpu"
    batch, context = args.batch or batch, args.context or context
    if cpu:
        over = {**over, **CPU_OVERRIDES}
    mixed = not cpu
    c = compiler.compile(spec, overrides=over, batch=batch, context=context, recompute=recompute,
                         format="bf16" if mixed else "fp32", devices=world, strategy=strategy).raise_for_errors()
    par = c.report["memory"]["training"]["all"]["parallel"]
    model = P.wrap(c.to_torch(device=device, seed=0), c, strategy, recompute=recompute, mixed=mixed)
    opt = P.make_optimizer(model, strategy, lr=1e-5)
    loss_fn = P.default_loss(P.inner(model))
    env = {"B": batch, "T": context, "F": c.settings["frames"]}
    data = [P.random_batch(P.inner(model), env, seed=100 * s + rank, device=device) for s in range(args.steps)]
    for b in data[:-1]:          # warm-up: the AdamW state exists before the measured step
        P.train_step(model, opt, [b], loss_fn)
    tracker = contextlib.nullcontext()
    if cpu:
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
        from torch.distributed._tools.mem_tracker import MemTracker
        if strategy in P.SHARDED:
            tracker = FSDPMemTracker(model, opt)
        else:
            tracker = MemTracker()
            tracker.track_external(model, getattr(opt, "optim", opt))     # zero1: its local AdamW
    else:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    with tracker:                # the measured step
        P.train_step(model, opt, [data[-1]], loss_fn)
    held = P.local_bytes(model, opt)
    if cpu:
        snap = tracker.get_tracker_snapshot("peak").get(device, {})
        peak = snap.get("Total", 0)
        if os.environ.get("BENCH_DEBUG"):
            print(rank, name, {str(k): v for k, v in snap.items()}, par["per_device"], flush=True)
    else:          # tensor memory at the peak, less the random batches (made up front; not the model's)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - sum(t.numel() * t.element_size()
                                                             for b in data for t in b.values())
    want = par["ranks"][rank % len(par["ranks"])]
    return {"case": name, "rank": rank, "strategy": strategy, "device": str(device), "batch": batch,
            "context": context, "recompute": recompute, "held": held, "predicted_held": want,
            "held_exact": all(held[k] == want[k] for k in ("params", "optimizer")), "peak": peak,
            "predicted_peak": par["per_device"]["total"], "ratio": peak / par["per_device"]["total"],
            "predicted": par["per_device"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="default: all (CPU: nano-fsdp, nano-ddp)")
    ap.add_argument("--cpu", action="store_true", help="gloo on the CPU even where CUDA is present")
    ap.add_argument("--steps", type=int, default=3, help="steps in all; the last is measured (at least 2)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--context", type=int)
    ap.add_argument("--json", help="also write the rows to this file (rank 0)")
    args = ap.parse_args()
    rank, world, device = P.init_distributed("gloo" if args.cpu else None)
    cases = args.case or (["nano-fsdp", "nano-ddp"] if device.type == "cpu" else list(CASES))
    rows = []
    for name in cases:
        row = measure(name, args, rank, world, device)
        got = [None] * world
        dist.all_gather_object(got, row)
        rows += got
        if rank == 0:
            for r in got:
                print(f"{r['case']:24s} rank {r['rank']}  held {'= predicted' if r['held_exact'] else 'DIFFERS'}  "
                      f"peak {r['peak'] / 2**20:9.1f} MiB  predicted {r['predicted_peak'] / 2**20:9.1f} MiB  "
                      f"ratio {r['ratio']:.3f}", flush=True)
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
