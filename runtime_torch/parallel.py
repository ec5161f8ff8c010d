"""Data-parallel training of a built model on torch.distributed's own engines (the layouts of compiler/parallel.py).

    rank, world, device = init_distributed()                    # under torchrun: gloo on the CPU, NCCL on GPUs
    model = build(compiled, device=device, seed=0)
    model = wrap(model, compiled, "fsdp", stage="stage1", recompute=True, mixed=True)
    opt = make_optimizer(model, "fsdp", lr=1e-4)
    loss = train_step(model, opt, micro_batches, loss_fn)
    save_checkpoint(model, opt, "ckpt/step100")                 # torch.distributed.checkpoint, sharded
    export_safetensors(model, "model.safetensors")              # one file in omnic's layout (both runtimes load it)

`wrap` honours the stage first (its frozen nodes get requires_grad False: no gradient, no optimizer state), turns
on activation checkpointing per repeated block when `recompute` (torch.utils.checkpoint around each block's
forward, the accounting's `--recompute`), then:
  ddp      DistributedDataParallel(gradient_as_bucket_view=True); mixed precision = autocast in `train_step`;
  zero1    the same, and `make_optimizer` gives a ZeroRedundancyOptimizer over AdamW;
  zero2    FSDP2 `fully_shard(reshard_after_forward=False)` per unit;
  fsdp     FSDP2 `fully_shard` per unit;
  hsdp:R   FSDP2 on a 2-D DeviceMesh (R replicas, N / R shards).
The sharding units are the graph's: one per node of a repeat group (each repeated block), then the root module with
everything else (compiler.parallel.units); they are found through the module tree (`model.node(name)`), never
through an op's internals. FSDP2 accepts units that mix frozen and trained parameters (only those with gradients
are reduced). Mixed precision on the sharded strategies is MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)
over fp32 master parameters.
"""
from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from typing import Callable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from compiler import registry as ops
from compiler.cost import cost_nodes
from compiler.parallel import Layout, LayoutError, check_layout, parse_layout, units
from compiler.report import stage_trainable
from runtime_common.inputs import example_inputs

from .model import OmnicModel

SHARDED = ("zero2", "fsdp", "hsdp")


def init_distributed(backend: Optional[str] = None) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK...): NCCL with one GPU per process
    when CUDA is there, else gloo on the CPU. Returns (rank, world size, this process's device)."""
    if "RANK" not in os.environ:
        raise RuntimeError("not started by torchrun: run `torchrun --nproc-per-node N script.py ...`")
    cuda = torch.cuda.is_available() and backend != "gloo"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"),
                                **({"device_id": device} if cuda else {}))
    return dist.get_rank(), dist.get_world_size(), device


def _layout(layout: Union[str, Layout]) -> Layout:
    return layout if isinstance(layout, Layout) else parse_layout(layout, dist.get_world_size())


def inner(model: nn.Module) -> OmnicModel:
    """The OmnicModel inside a DDP wrapper (FSDP2 keeps the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def apply_stage(model: OmnicModel, compiled, stage: Optional[str] = None) -> set[str]:
    """requires_grad as the stage says (None: the spec's frozen layers only); returns the trained node names."""
    trained = stage_trainable(compiled.graph, compiled.doc, stage)
    if not trained:
        raise ValueError(f"stage {stage!r} trains nothing")
    for node in model.graph.nodes():         # each declared tensor at its owner (a tied copy is the owner's)
        if node.op != "Input":
            for key, w in ops.get(node.op).weights(node.params).items():
                if not w.tied_to:
                    model.param(f"{node.name}.{key}").requires_grad_(node.name in trained)
    return trained


def unit_nodes(model: OmnicModel) -> list[str]:
    """The nodes that are sharding units of their own: every node of a repeat group that holds parameters."""
    return [n.name for n in model.graph.nodes()
            if n.op != "Input" and n.group and any(True for _ in model.node(n.name).parameters())]


def checkpoint_blocks(model: OmnicModel) -> None:
    """Activation checkpointing per repeated block: each block's forward runs under torch.utils.checkpoint (only
    its input is kept; its insides are recomputed in the backward)."""
    for name in unit_nodes(model):
        mod = model.node(name)
        mod.forward = functools.partial(checkpoint, type(mod).forward.__get__(mod), use_reentrant=False)


def wrap(model: OmnicModel, compiled, layout: Union[str, Layout], *, stage: Optional[str] = None,
         recompute: bool = False, mixed: bool = True, frozen_dtype: Optional[torch.dtype] = None,
         mesh=None) -> nn.Module:
    """The model laid out for data-parallel training (see the module docstring); call inside the process group.
    Frozen parameters are stored in `frozen_dtype` (default: bf16 under mixed precision, as the accounting's
    `--format bf16`; else as built)."""
    lay = _layout(layout)
    if lay.devices != dist.get_world_size():
        raise ValueError(f"layout for {lay.devices} devices, but {dist.get_world_size()} processes run")
    trained = apply_stage(model, compiled, stage)
    try:                                 # the accounting's layout check: the same refusal as `omnic check`
        check_layout(lay, units(compiled.graph, cost_nodes(compiled.graph, 1, 1, 1), trained))
    except LayoutError as e:
        raise ValueError(e.message + (f" ({e.hint})" if e.hint else "")) from None
    frozen_dtype = frozen_dtype or (torch.bfloat16 if mixed else None)
    if frozen_dtype is not None:
        for p in model.parameters():
            if not p.requires_grad and p.is_floating_point():
                p.data = p.data.to(frozen_dtype)
    if recompute:
        checkpoint_blocks(model)
    device = next(model.parameters()).device
    if lay.strategy in ("ddp", "zero1"):
        model.train_mixed = mixed
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    if mesh is None:
        shape = (lay.replicas, lay.shard) if lay.strategy == "hsdp" else (lay.devices,)
        names = ("replicate", "shard") if lay.strategy == "hsdp" else ("shard",)
        mesh = init_device_mesh(device.type, shape, mesh_dim_names=names)
    kw = {"mesh": mesh, "reshard_after_forward": lay.strategy != "zero2"}
    if mixed:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for name in unit_nodes(model):
        fully_shard(model.node(name), **kw)
    fully_shard(model, **kw)
    model.train_mixed = False           # FSDP2 casts itself
    return model


def make_optimizer(model: nn.Module, layout: Union[str, Layout], lr: float = 1e-4, **kw) -> torch.optim.Optimizer:
    """AdamW over the trained parameters; under zero1 a ZeroRedundancyOptimizer of AdamW (each rank keeps the state
    of its part)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if _layout(layout).strategy == "zero1":
        from torch.distributed.optim import ZeroRedundancyOptimizer
        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, lr=lr, **kw)
    return torch.optim.AdamW(params, lr=lr, **kw)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: Sequence[dict],
               loss_fn: Callable[[dict, dict], torch.Tensor]) -> float:
    """One optimizer step over `micro_batches` (gradient accumulation: each micro-batch's loss / their count;
    DDP reduces on the last only, FSDP2 reduce-scatters every one, as the accounting assumes). `loss_fn(outputs,
    micro_batch)`. Returns the mean loss over the micro-batches and the ranks."""
    om = inner(model)
    device = next(om.parameters()).device
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if getattr(om, "train_mixed", False) else nullcontext()
    n = len(micro_batches)
    total = torch.zeros((), device=device)
    for i, mb in enumerate(micro_batches):
        last = i == n - 1
        sync = model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) and not last else nullcontext()
        with sync:
            with amp:
                out = model(**{k: v for k, v in mb.items() if k in om.input_names})
            loss = loss_fn(out, mb) / n
            loss.backward()
        total += loss.detach().float()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


# --- data and loss for examples and tests ----------------------------------------------------------------------------
def is_logits(model: OmnicModel, output: str) -> bool:
    """An output of a head Linear (its last dimension is a vocabulary)."""
    w = model.weight_decls.get(f"{output}.weight")
    return w is not None and w.role == "head"


def random_batch(model: OmnicModel, env: dict[str, int], seed: int, device=None) -> dict[str, torch.Tensor]:
    """Random inputs at sizes `env` ({"B", "T", "F"}) from the one input generator (runtime_common/inputs.py), and
    a target per output (`target:<output>`): token ids for logits, N(0, 1) values of the output's shape otherwise."""
    g = model.graph
    out = {k: torch.from_numpy(v) for k, v in example_inputs(g, env, seed).items()}
    gen = torch.Generator().manual_seed(seed)
    for node, o in g.outputs:
        name = node if o == "out" else f"{node}.{o}"
        shape = [d.eval(env) for d in g[node].outputs[o].shape]
        out["target:" + name] = (torch.randint(0, shape[-1], shape[:-1], generator=gen) if is_logits(model, name)
                                 else torch.randn(shape, generator=gen))
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def default_loss(model: OmnicModel) -> Callable[[dict, dict], torch.Tensor]:
    """Cross-entropy for logits against their target ids, mean squared error for the other outputs; summed."""
    def loss(outputs: dict, batch: dict) -> torch.Tensor:
        total = 0
        for name, y in outputs.items():
            t = batch["target:" + name]
            if is_logits(model, name):
                total = total + nn.functional.cross_entropy(y.float().flatten(0, -2), t.flatten())
            else:
                total = total + nn.functional.mse_loss(y.float(), t)
        return total
    return loss


# --- checkpoints -----------------------------------------------------------------------------------------------------
def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Model and optimizer state through torch.distributed.checkpoint: each rank writes its own shards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=path)


def load_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """The reverse of `save_checkpoint`, into a model wrapped the same way (tested); DCP also reshards to other
    layouts (not tested here)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def export_safetensors(model: nn.Module, path: str, dtype: torch.dtype = torch.float32) -> None:
    """Gather the full weights and write one safetensors file on rank 0 in omnic's layout (save_weights': every
    tensor of the model once, tied tensors under their owner's name), floating tensors in `dtype` (one dtype for
    the file, whatever frozen parts were held in), atomically. Collective: call on every rank."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        ties = inner(model).ties
        out = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous() for k, v in sorted(sd.items())
               if k not in ties}
        tmp = f"{path}.tmp-{os.getpid()}"
        save_file(out, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    dist.barrier()


# --- what a rank holds -----------------------------------------------------------------------------------------------
def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages under `tensors` (views of one buffer count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = _local(t).untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def local_bytes(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> dict[str, int]:
    """Bytes this rank's storages hold: trained parameters, frozen parameters, gradients, optimizer state (the
    figures compiler.parallel predicts per rank)."""
    ps = list(inner(model).parameters())
    out = {"params": _storage_bytes(p for p in ps if p.requires_grad),
           "frozen_weights": _storage_bytes(p for p in ps if not p.requires_grad),
           "grads": _storage_bytes(p.grad for p in ps if p.grad is not None)}
    if optimizer is not None:
        opt = getattr(optimizer, "optim", optimizer)          # ZeroRedundancyOptimizer keeps its local AdamW
        out["optimizer"] = _storage_bytes(t for st in opt.state.values() for t in st.values()
                                          if isinstance(t, torch.Tensor))
    return out
