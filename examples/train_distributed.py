"""Train a spec on N devices with torch.distributed: a shipped spec, shrunk by overrides, on random data.

    omnic check specs/nanovlm/default.json --devices 2 --strategy fsdp --format fp32 --batch 2 --context 64 \
        --set 'layers[0].params.layers=2' --set 'layers[5].params.depth=2'         # what each device will hold
    torchrun --standalone --nproc-per-node 2 examples/train_distributed.py --steps 5 --out runs/nano \
        --set 'layers[0].params.layers=2' --set 'layers[5].params.depth=2'         # gloo on the CPU, NCCL on GPUs
    python -c "import compiler, runtime_mlx; ..."                                  # runs/nano/model.safetensors

Every rank builds the same model from the spec (same seed), `runtime_torch.parallel.wrap` lays it out (--strategy,
--stage, --recompute, bf16 mixed precision on GPUs), each step trains on --grad-accum micro-batches of random
inputs and targets (cross-entropy for logits, mean squared error for other outputs), and at the end the run writes
a torch.distributed.checkpoint directory (OUT/checkpoint, resumable with --resume) and one safetensors file in
omnic's layout (OUT/model.safetensors) that runtime_torch.load_weights and runtime_mlx.load_weights both read.
Before anything is launched, the layout is checked against the spec (an impossible one is an error on every
rank, before the process group forms) and rank 0 prints the predicted per-device memory.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import compiler  # noqa: E402
from compiler.cli import parse_sets  # noqa: E402
from compiler.tables import fmt_bytes  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="specs/nanovlm/default.json")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="spec override, as in `omnic check --set` (repeatable)")
    ap.add_argument("--strategy", default="fsdp", help="ddp, zero1, zero2, fsdp or hsdp:R")
    ap.add_argument("--stage", help="training stage of the spec (default: everything not frozen)")
    ap.add_argument("--batch", type=int, default=2, help="micro-batch per device")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--recompute", action="store_true", help="activation checkpointing per repeated block")
    ap.add_argument("--fp32", action="store_true", help="no mixed precision (the default on the CPU)")
    ap.add_argument("--out", default="runs/train_distributed")
    ap.add_argument("--resume", action="store_true", help="load OUT/checkpoint before training")
    args = ap.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "0"))
    if not world:
        sys.exit("run me with torchrun: torchrun --standalone --nproc-per-node N examples/train_distributed.py ...")
    import torch
    mixed = torch.cuda.is_available() and not args.fp32
    c = compiler.compile(args.spec, overrides=parse_sets(tuple(args.sets)), batch=args.batch,
                         context=args.context, format="bf16" if mixed else "fp32", recompute=args.recompute,
                         devices=world, strategy=args.strategy, grad_accum=args.grad_accum)
    stage = args.stage or "all"
    if stage != "all" and stage not in (c.doc.stages if c.doc else None or {}):
        sys.exit(f"{args.spec}: unknown stage {args.stage!r}")
    par = c.report["memory"]["training"][stage]["parallel"] if c.report else None
    if not c.ok or par is None or "error" in par:      # refused before the process group forms
        for d in c.errors:
            print(d.render(), file=sys.stderr)
        if par and "error" in par:
            print(f"{args.spec}: {par['error']}" + (f" (hint: {par['hint']})" if par.get("hint") else ""),
                  file=sys.stderr)
        sys.exit(2)

    from runtime_torch import parallel as P
    rank, world, device = P.init_distributed()
    if rank == 0:
        d = par["per_device"]
        print(f"{c.report['name']}: {par['strategy']} on {world} devices; predicted per device "
              f"{fmt_bytes(d['total'])} (params {fmt_bytes(d['params'])}, grads {fmt_bytes(d['grads'])}, optimizer "
              f"{fmt_bytes(d['optimizer'])}, activations {fmt_bytes(d['activations'])})", flush=True)
    model = P.wrap(c.to_torch(device=device, seed=0), c, args.strategy, stage=args.stage,
                   recompute=args.recompute, mixed=mixed)
    opt = P.make_optimizer(model, args.strategy, lr=args.lr)
    ckpt = os.path.join(args.out, "checkpoint")
    if args.resume:
        P.load_checkpoint(model, opt, ckpt)
    loss_fn = P.default_loss(P.inner(model))
    env = {"B": args.batch, "T": args.context, "F": c.settings["frames"]}
    for step in range(args.steps):
        t0 = time.perf_counter()
        micro = [P.random_batch(P.inner(model), env, seed=(step * args.grad_accum + i) * world + rank, device=device)
                 for i in range(args.grad_accum)]
        loss = P.train_step(model, opt, micro, loss_fn)
        if rank == 0:
            print(f"step {step}: loss {loss:.4f} ({time.perf_counter() - t0:.2f} s)", flush=True)
    os.makedirs(args.out, exist_ok=True)
    P.save_checkpoint(model, opt, ckpt)
    P.export_safetensors(model, os.path.join(args.out, "model.safetensors"))
    if rank == 0:
        print(f"wrote {ckpt} (torch.distributed.checkpoint) and {args.out}/model.safetensors", flush=True)


if __name__ == "__main__":
    main()
    import torch.distributed as dist
    dist.destroy_process_group()
