"""Per-device training memory under data-parallel strategies, from the spec alone (nothing instantiated).

A layout is `--devices N --strategy S` (`parse_layout`):
  ddp      every device holds the whole model, gradients and optimizer state (torch DistributedDataParallel,
           gradient_as_bucket_view: the gradients are the all-reduce buckets, nothing extra);
  zero1    as ddp, but each device keeps the AdamW state of its own part only (torch ZeroRedundancyOptimizer:
           whole tensors, largest first, each to the device holding the fewest elements so far);
  zero2    parameters, gradients and AdamW state sharded; a unit's parameters stay gathered from its forward to
           its backward (FSDP2 `fully_shard(reshard_after_forward=False)`);
  fsdp     everything sharded, gathered one unit at a time (FSDP2 `fully_shard`, the default);
  hsdp:R   fsdp inside each of R replica groups of N / R devices, replicated across the groups (FSDP2 on a 2-D
           DeviceMesh (R, N / R)).
Sharding units (`units`): one per node of a repeat group (each repeated block) plus the root (everything else),
the boundaries the torch wrapper uses (runtime_torch/parallel.py).

Conventions (what the torch runtime allocates; runtime_torch/parallel.py):
  * trained parameters are kept in fp32 (the master copy), their gradients in fp32, AdamW `exp_avg` and
    `exp_avg_sq` in fp32 and one fp32 `step` scalar per tensor: 4 + 4 + 8 B per element, the 16 B per parameter
    of the one-device figure split the way torch splits it;
  * frozen parameters: their storage format (`--format`), no gradient, no optimizer state;
  * compute dtype: the format's (bf16 unless --format fp32). Under mixed precision the sharded strategies gather
    parameters in the compute dtype (MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)); ddp and zero1 run
    under autocast, which caches a bf16 copy of every trained weight during the forward;
  * FSDP2 shards each tensor on dim 0 as `torch.chunk` does: chunks of ceil(d0 / S) rows; each device's shard is
    padded to that size (the storage FSDP2 allocates), so parameters and gradients count the padded shard; AdamW
    state follows the unpadded local shard (zeros_like of the DTensor);
  * ddp / zero1: the largest trained tensor's gradient as autograd makes it (before it is copied into its
    bucket; a tensor used k > 1 times, tied, has k gradients and their sum alive at once);
  * in flight under fsdp / hsdp: the root unit's parameters (the root stays gathered from its forward to the end of
    its backward), the current unit's and the next (prefetched) unit's gathered parameters; in the backward the
    current unit's unsharded gradients (compute dtype) and its reduce-scatter input (fp32, padded). zero2 holds
    every unit gathered;
  * activations are those of one micro-batch (`--batch`); gradient accumulation (`--grad-accum`) multiplies the
    tokens and FLOPs of a step, not the memory (gradients are reduced every micro-batch);
  * "per device" is the device that holds the most (devices differ only in how the shards fall).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .cost import NodeCost
from .formats import Format, tensor_bits
from .ir import Graph

STRATEGIES = ("ddp", "zero1", "zero2", "fsdp", "hsdp")
MASTER_BYTES, GRAD_BYTES, ADAM_BYTES, STEP_BYTES = 4, 4, 8, 4
ROOT = "the root unit (the layers outside repeated blocks)"     # a name no node can have (spaces)
MAX_RANKS = 64             # per-rank figures listed for the first 64 shard positions


class LayoutError(ValueError):
    """An impossible layout: message and hint, raised before anything is launched."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class Layout:
    strategy: str          # one of STRATEGIES
    devices: int
    replicas: int = 1      # hsdp's R; 1 for the others

    @property
    def shard(self) -> int:
        """Devices a tensor is split over: N for zero*/fsdp, N / R for hsdp, 1 for ddp."""
        return {"ddp": 1, "hsdp": self.devices // self.replicas}.get(self.strategy, self.devices)

    @property
    def name(self) -> str:
        return f"hsdp:{self.replicas}" if self.strategy == "hsdp" else self.strategy

    def to_json(self) -> dict:
        return {"strategy": self.name, "devices": self.devices, "replicas": self.replicas, "shard": self.shard}


def parse_layout(strategy: str, devices: int) -> Layout:
    """`fsdp`, `hsdp:2`, ... on `devices` devices; LayoutError when it cannot be laid out."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise LayoutError(f"devices must be a positive integer, got {devices!r}")
    name, _, arg = str(strategy).strip().lower().partition(":")
    if name not in STRATEGIES:
        from .diagnostics import did_you_mean
        raise LayoutError(f"unknown strategy {strategy!r}",
                          did_you_mean(name, STRATEGIES) or "strategies: ddp, zero1, zero2, fsdp, hsdp:R")
    if name != "hsdp":
        if arg:
            raise LayoutError(f"strategy {name} takes no ':{arg}'", "only hsdp takes a replica count (hsdp:R)")
        return Layout(name, devices)
    if not arg.isdigit() or int(arg) < 1:
        raise LayoutError(f"hsdp needs a replica count: hsdp:R, got {strategy!r}",
                          f"e.g. hsdp:2 on {devices} devices: 2 replicas of {max(devices // 2, 1)}-way shards")
    r = int(arg)
    if devices % r:
        divs = [d for d in range(1, devices + 1) if devices % d == 0]
        raise LayoutError(f"hsdp:{r}: {r} replicas do not divide {devices} devices",
                          "replica counts that divide it: " + ", ".join(map(str, divs)))
    return Layout("hsdp", devices, r)


# --- sharding units --------------------------------------------------------------------------------------------------
@dataclass
class Unit:
    """One FSDP2 unit: its nodes and their tensors (name, shape, role, trained?), tied copies left out."""

    name: str
    nodes: list[str]
    tensors: list[tuple[str, tuple[int, ...], str, bool]]
    uses: dict = field(default_factory=dict)     # tensor name -> times the model uses it (> 1: tied copies)

    def numel(self, trained: Optional[bool] = None) -> int:
        return sum(_numel(s) for _, s, _, t in self.tensors if trained is None or t == trained)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def units(g: Graph, costs: list[NodeCost], trainable: set[str]) -> list[Unit]:
    """One unit per node of a repeat group, in graph order, then the root (every other node's tensors)."""
    out: list[Unit] = []
    root = Unit(ROOT, [], [])
    uses: dict[str, int] = {}
    for c in costs:
        for w in c.weights.values():
            if w.tied_to:
                uses[w.tied_to] = uses.get(w.tied_to, 1) + 1
    for c in costs:
        node = g[c.name]
        tensors = [(n, tuple(w.shape), w.role, c.name in trainable) for n, w in c.weights.items() if not w.tied_to]
        tied = {n: uses[n] for n, *_ in tensors if n in uses}
        if node.group and tensors:
            out.append(Unit(c.name, [c.name], tensors, tied))
        elif tensors:
            root.nodes.append(c.name)
            root.tensors += tensors
            root.uses.update(tied)
    return out + [root] if root.tensors else out


# --- FSDP2 and ZeroRedundancyOptimizer layouts ----------------------------------------------------------------------
def chunk_rows(d0: int, shards: int) -> list[int]:
    """Rows of each device's chunk of a tensor with `d0` rows, as torch.chunk splits it (later chunks may be short
    or empty)."""
    c = -(-d0 // shards)
    return [max(0, min(c, d0 - r * c)) for r in range(shards)]


def padded_numel(shape, shards: int) -> int:
    """Elements of one device's FSDP2 shard storage: ceil(d0 / S) rows, on every device."""
    if not shape:
        return 1
    return -(-shape[0] // shards) * _numel(shape[1:])


def local_numel(shape, shards: int, rank: int) -> int:
    """Elements of device `rank`'s unpadded shard (the DTensor's local tensor)."""
    if not shape:
        return 1 if rank == 0 else 0
    return chunk_rows(shape[0], shards)[rank] * _numel(shape[1:])


def zero_partition(sizes: list[int], devices: int) -> list[list[int]]:
    """Indices of `sizes` each device's ZeroRedundancyOptimizer keeps state for: tensors largest first (stable),
    each to the device with the fewest elements so far (torch.distributed.optim.ZeroRedundancyOptimizer)."""
    held = [0] * devices
    parts: list[list[int]] = [[] for _ in range(devices)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = min(range(devices), key=lambda k: held[k])
        parts[r].append(i)
        held[r] += sizes[i]
    return parts


def check_layout(layout: Layout, us: list[Unit]) -> None:
    """Impossible layouts: a stage that trains nothing, more devices than the shards allow."""
    trained = [t for u in us for t in u.tensors if t[3]]
    if not trained:
        raise LayoutError("this training stage trains nothing", "name trained layers in the stage's 'train', or "
                                                                 "freeze fewer")
    if layout.strategy == "zero1" and len(trained) < layout.devices:
        raise LayoutError(f"zero1 over {layout.devices} devices needs as many trained tensors; the model trains "
                          f"{len(trained)}", f"use at most {len(trained)} devices, or fsdp")
    if layout.shard > 1:
        for u in us:
            rows = max(s[0] if s else 1 for _, s, _, _ in u.tensors)
            if rows < layout.shard:
                what = u.name if u.name == ROOT else f"unit {u.name}"
                raise LayoutError(f"{layout.shard}-way sharding leaves devices without any part of {what} (its "
                                  f"largest tensor has {rows} rows along dim 0)",
                                  f"shard over at most {rows} devices (hsdp:R shards over N / R)")


def _grad_copies(uses: int) -> int:
    """Gradient tensors alive at once while a tensor used `uses` times gets its gradient."""
    return 1 if uses == 1 else uses + 1


# --- per-device figures ----------------------------------------------------------------------------------------------
def per_device(layout: Layout, us: list[Unit], fmt: Format, activations: int, grad_accum: int = 1) -> dict:
    """Bytes per device, the device holding the most: parameters (trained, fp32 master), gradients, optimizer,
    frozen weights (their format), gather and reduce-scatter buffers in flight, activations of one micro-batch.
    `ranks` gives each shard position's parameters / gradients / optimizer (device r holds entry r mod S; zero1:
    one per device); what the runtime tests compare to the byte."""
    S = layout.shard
    cb = fmt.compute_bytes
    mixed = cb < MASTER_BYTES
    trained = [(s, u.name) for u in us for _, s, _, t in u.tensors if t]
    frozen = [(s, role) for u in us for _, s, role, t in u.tensors if not t]
    ranks = []      # sharded: device r holds entry r mod S; rank 0's chunks are full, so it holds the most
    sizes = [_numel(s) for s, _ in trained]
    parts = zero_partition(sizes, layout.devices) if layout.strategy == "zero1" else [range(len(sizes))]
    for r in range(min(S, MAX_RANKS) if layout.strategy != "zero1" else layout.devices):
        if layout.strategy in ("ddp", "zero1"):
            params, grads = MASTER_BYTES * sum(sizes), GRAD_BYTES * sum(sizes)
            opt = sum(ADAM_BYTES * sizes[i] + STEP_BYTES for i in parts[r])
        else:
            params = MASTER_BYTES * sum(padded_numel(s, S) for s, _ in trained)
            grads = GRAD_BYTES * sum(padded_numel(s, S) for s, _ in trained)
            opt = sum(ADAM_BYTES * local_numel(s, S, r) + STEP_BYTES for s, _ in trained)
        ranks.append({"params": params, "grads": grads, "optimizer": opt})
    top = max(ranks, key=lambda x: x["params"] + x["grads"] + x["optimizer"])
    if layout.strategy in ("ddp", "zero1"):
        frozen_b = sum(tensor_bits(fmt, s, role) for s, role in frozen) / 8
    elif fmt.name in ("fp32", "bf16", "fp16"):       # plain dtypes are sharded exactly like the trained tensors
        frozen_b = sum(padded_numel(s, S) * fmt.keep_bits // 8 for s, _ in frozen)
    else:                                            # quantised storage: an even split of its bytes
        frozen_b = -(-sum(tensor_bits(fmt, s, role) for s, role in frozen) / 8 // S)
    gather, reduce = _buffers(layout, us, cb, mixed)
    figs = {**top, "frozen_weights": round(frozen_b), "gather_buffers": gather, "reduce_buffers": reduce,
            "activations": activations}
    figs["total"] = sum(figs.values())
    return {**layout.to_json(), "units": len(us), "grad_accum": grad_accum, "per_device": figs, "ranks": ranks}


def _buffers(layout: Layout, us: list[Unit], cb: int, mixed: bool) -> tuple[int, int]:
    """(gathered parameters, gradient reduction buffers) in flight at the peak; see the module's conventions."""
    S = layout.shard
    if layout.strategy in ("ddp", "zero1"):
        # autocast's cached bf16 copies of the trained weights; the largest gradient as autograd makes it before
        # it is copied into its bucket (a tensor used k > 1 times: k gradients and their sum)
        temps = max((MASTER_BYTES * _numel(s) * _grad_copies(u.uses.get(n, 1))
                     for u in us for n, s, _, t in u.tensors if t), default=0)
        return (cb * sum(u.numel(True) for u in us) if mixed else 0), temps

    def gathered(u: Unit) -> int:                 # the unit's parameters unsharded, in the compute dtype
        return cb * u.numel()

    def rs_input(u: Unit) -> int:                 # unsharded gradients + fp32 reduce-scatter input (padded)
        n = u.numel(True)
        return (cb * n if mixed else 0) + 4 * S * sum(padded_numel(s, S) for _, s, _, t in u.tensors if t)

    root = next((u for u in us if u.name == ROOT), None)
    blocks = [u for u in us if u is not root]
    if layout.strategy == "zero2":
        gather = sum(gathered(u) for u in us)
    else:
        sizes = sorted((gathered(u) for u in blocks), reverse=True)
        gather = (gathered(root) if root else 0) + sum(sizes[:2])
    reduce = max((rs_input(u) for u in us), default=0)
    return gather, reduce
