"""`omnic fit`: what fits where. For a per-device budget and a layout, the largest micro-batch at each context per
storage format and strategy; and a table of common devices: fits or not at the spec's batch and context, with an
estimated time per training step.

Memory is compiler/parallel.py's per-device total; its only part that grows with batch and context is the
activations, so each (batch, context) is one evaluation of the cost rules on the compiled graph (no recompiling),
and the largest batch is found by bisection (memory grows with the batch).

Step time = FLOPs of one training step on one device (its micro-batch x the accumulation) / (the device's dense
bf16 peak x MFU). MFU, the fraction of peak a training run achieves, is the user's to set (--mfu, default 0.4;
large-model training reports 0.35-0.55 on H100 and A100 class devices). Peak figures (dense, no sparsity) come from
the vendors' documents cited in DEVICES; Apple publishes fp32 GPU figures only, which are used as they are.
Capacities are the datasheets' (GB = 10^9 bytes); on Apple silicon the GPU may use about 3/4 of the unified
memory by default (Metal's recommendedMaxWorkingSetSize), which is the capacity used here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import cost, parallel
from .formats import get_format
from .report import stage_trainable


@dataclass(frozen=True)
class Device:
    name: str
    memory: float          # bytes the model may use
    peak_flops: float      # dense bf16 tensor FLOP/s (Apple: fp32 GPU FLOP/s)
    source: str


DEVICES = [
    Device("H100 SXM 80 GB", 80e9, 989e12, "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity"),
    Device("H200 SXM 141 GB", 141e9, 989e12, "NVIDIA H200 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with "
                                             "sparsity"),
    Device("A100 40 GB", 40e9, 312e12, "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS (624 with sparsity)"),
    Device("A100 80 GB", 80e9, 312e12, "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS (624 with sparsity)"),
    Device("L4 24 GB", 24e9, 121e12, "NVIDIA L4 Tensor Core GPU datasheet: BF16 242 TFLOPS with sparsity"),
    Device("RTX 4090 24 GB", 24e9, 165.2e12, "NVIDIA Ada Lovelace GPU architecture whitepaper: peak BF16 tensor "
                                             "165.2 TFLOPS with FP32 accumulate"),
    Device("Apple M1 16 GB", 16e9 * 3 / 4, 2.6e12, "Apple, M1 announcement (Nov 2020): 2.6 TFLOPS (fp32)"),
    Device("Apple M2 Max 96 GB", 96e9 * 3 / 4, 13.6e12, "Apple newsroom, M2 Pro and M2 Max (Jan 2023): 13.6 TFLOPS"),
    Device("Apple M2 Ultra 192 GB", 192e9 * 3 / 4, 27.2e12, "Apple newsroom, M2 Ultra (Jun 2023): 27.2 TFLOPS"),
]
MAX_BATCH = 1 << 20


class Fitter:
    """Per-device memory of one compiled spec at any (batch, context), for layouts and storage formats."""

    def __init__(self, compiled, stage: Optional[str] = None, recompute: bool = False):
        self.c, self.g, self.doc = compiled, compiled.graph, compiled.doc
        self.frames = compiled.settings["frames"]
        self.recompute = recompute
        costs = cost.cost_nodes(self.g, 1, 1, self.frames)        # weights do not depend on batch and context
        self.trainable = stage_trainable(self.g, self.doc, stage)
        self.path = cost.grad_path(self.g, self.trainable)
        self.units = parallel.units(self.g, costs, self.trainable)
        self._acts: dict[tuple[int, int], tuple[int, int]] = {}   # (B, T) -> (activation elements, FLOPs)

    def _eval(self, batch: int, context: int) -> tuple[int, int]:
        key = (batch, context)
        if key not in self._acts:
            costs = cost.cost_nodes(self.g, batch, context, self.frames)
            self._acts[key] = (cost.training_activations(costs, self.path, 1, self.recompute),
                               cost.training_flops(costs, self.trainable, self.path))
        return self._acts[key]

    def fixed(self, layout: parallel.Layout, fmt: str) -> int:
        """Per-device bytes that do not grow with batch and context."""
        return parallel.per_device(layout, self.units, get_format(fmt), 0)["per_device"]["total"]

    def memory(self, layout: parallel.Layout, fmt: str, batch: int, context: int) -> int:
        return self.fixed(layout, fmt) + self._eval(batch, context)[0] * get_format(fmt).compute_bytes

    def flops(self, batch: int, context: int) -> int:
        return self._eval(batch, context)[1]

    def largest_batch(self, layout: parallel.Layout, fmt: str, context: int, limit: float) -> int:
        """The largest micro-batch whose per-device total is within `limit` at `context`; 0 when none is."""
        fixed, cb = self.fixed(layout, fmt), get_format(fmt).compute_bytes
        fits = lambda b: fixed + self._eval(b, context)[0] * cb <= limit     # noqa: E731
        if not fits(1):
            return 0
        lo, hi = 1, 2
        while hi <= MAX_BATCH and fits(hi):
            lo, hi = hi, hi * 2
        if hi > MAX_BATCH:
            return MAX_BATCH
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo


def contexts_around(context: int) -> list[int]:
    """Powers of two from 512 to 8 x the spec's context, and the spec's own."""
    out, c = {context}, 512
    while c <= max(context * 8, 512):
        out.add(c)
        c *= 2
    return sorted(out)


def fit(compiled, *, limit: float, layouts: list[parallel.Layout], formats: list[str], batch: int, context: int,
        grad_accum: int = 1, stage: Optional[str] = None, recompute: bool = False, mfu: float = 0.4,
        contexts: Optional[list[int]] = None) -> dict:
    """The `omnic fit` document: `largest` (per format and strategy: the largest micro-batch at each context within
    `limit` per device), `devices` (per device of DEVICES and strategy: fits at (batch, context), total, step time).
    Layouts that cannot be laid out for the stage carry their `error`."""
    f = Fitter(compiled, stage, recompute)
    contexts = contexts or contexts_around(context)
    rows, ok_layouts, errors = [], [], {}
    for lay in layouts:
        try:
            parallel.check_layout(lay, f.units)
            ok_layouts.append(lay)
        except parallel.LayoutError as e:
            errors[lay.name] = e.message
    for fmt in formats:
        for lay in ok_layouts:
            best = {str(t): f.largest_batch(lay, fmt, t, limit) for t in contexts}
            tokens = max((b * int(t) for t, b in best.items()), default=0)
            rows.append({"format": fmt, "strategy": lay.name, "largest_batch": best, "most_tokens": tokens})
    step_flops = f.flops(batch, context) * grad_accum
    devs = []
    for d in DEVICES:
        for lay in ok_layouts:
            mem = f.memory(lay, formats[0], batch, context)
            devs.append({"device": d.name, "strategy": lay.name, "memory": d.memory, "total": mem,
                         "fits": mem <= d.memory, "step_seconds": step_flops / (d.peak_flops * mfu),
                         "peak_flops": d.peak_flops, "source": d.source})
    return {"name": compiled.report["name"], "limit": limit, "devices": layouts[0].devices if layouts else 1,
            "stage": stage or "all", "recompute": recompute, "batch": batch, "context": context,
            "grad_accum": grad_accum, "mfu": mfu, "flops_step_per_device": step_flops, "contexts": contexts,
            "largest": rows, "table": devs, "errors": errors}


def tables(doc: dict) -> list:
    from .tables import fmt_bytes, fmt_flops, table
    out = [table(f"{doc['name']}: largest micro-batch per device within {fmt_bytes(doc['limit'])} on "
                 f"{doc['devices']} devices, by context (stage {doc['stage']}"
                 + (", recomputation" if doc["recompute"] else "") + ")",
                 ["format", "strategy"] + [str(t) for t in doc["contexts"]] + ["most tokens"],
                 [[r["format"], r["strategy"]] + [str(b) if b else "-" for b in r["largest_batch"].values()]
                  + [f"{r['most_tokens']:,}"] for r in doc["largest"]], text_cols=2)]
    strategies = list(dict.fromkeys(d["strategy"] for d in doc["table"]))
    by = {(d["device"], d["strategy"]): d for d in doc["table"]}
    rows = []
    for dev in DEVICES:
        d0 = by.get((dev.name, strategies[0])) if strategies else None
        if d0 is None:
            continue
        rows.append([dev.name, fmt_bytes(dev.memory), f"{dev.peak_flops / 1e12:g}", _seconds(d0["step_seconds"])]
                    + [("fits " if by[dev.name, st]["fits"] else "NO ") + fmt_bytes(by[dev.name, st]["total"])
                       for st in strategies])
    out.append(table(
        f"devices at micro-batch {doc['batch']} x context {doc['context']} x {doc['grad_accum']} accumulated, "
        f"{doc['devices']} devices ({fmt_flops(doc['flops_step_per_device'])} per device and step; step time at "
        f"MFU {doc['mfu']:.0%}): fits / NO, with the memory each device needs",
        ["device", "memory", "peak TFLOP/s", "step time"] + strategies, rows))
    from rich.text import Text
    out.append(Text("peak figures (dense, no sparsity): " + "; ".join(f"{d.name}: {d.source}" for d in DEVICES)))
    return out


def _seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s" if s < 600 else f"{s / 60:.1f} min"
