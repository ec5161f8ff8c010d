"""Weight-only int8 / int4 PyTorch models through torchao's quantisation configs (CPU), saved as safetensors.

    plan = compiler.quantise.quant_plan(compiled, "torch", "int4", group_size=128)
    model = quantise(runtime_torch.build(compiled, seed=0), plan)   # bf16; Linear weights become torchao tensors
    save_quantised(model, "model.safetensors", plan)                # every stored tensor, byte for byte
    model = load_quantised(compiled, "model.safetensors")           # the same model back

torchao (0.14; `pip install omnic[quant]`) does the work: `quantize_` with `Int8WeightOnlyConfig` (int8 per output
row: an AffineQuantizedTensor of int8 values, a scale in the model's dtype and an int64 zero point per row) or
`Int4WeightOnlyConfig(group_size, int4_packing_format="opaque")` (the CPU packing: two weights per byte and a
(scale, zero) pair per group, run by aten's `_weight_int4pack_mm_for_cpu`). Releases 0.15 to 0.18 have no int4
weight-only packing that runs on the CPU, which is why the range is pinned. The model is cast to bfloat16 first:
the tensors the plan keeps (embeddings, a head, norms, biases) stay bf16, as the accounting's `torchao-*` formats
count them. Only 2-D `weight`s of modules that the ops read through `kernels.linear` (a Linear layer, a block's
projections: `compiler.quantise.READ_BY_KERNEL`) are quantised: F.linear dispatches to torchao's kernels for them;
any other tensor the plan names is a QuantError naming its layer, raised before anything is quantised.

Saved files hold each quantised weight as its inner tensors, named `<weight>:<path>` as torchao's own safetensors
support names them (`...q_proj.weight:tensor_impl.int_data`, `...:tensor_impl.scale`, ...), other tensors under their
names, and the plan in the metadata (`omnic_quantization`). `stored_bytes` counts what a model holds the same way, so
the file, the live model and the report's `memory.weights[format]` can be compared exactly.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from compiler.quantise import QuantError, QuantPlan, quant_plan

META_KEY = "omnic_quantization"


def _torchao(plan: QuantPlan):
    """torchao.quantization, imported quietly: torchao 0.14 warns that its C++ extensions are not built for this
    torch; the two configs used here run on aten's own kernels and need none."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        import torchao.quantization as q
    except ImportError as e:
        raise QuantError(f"{plan.scheme.engine} needs torchao 0.14: pip install 'omnic[quant]' ({e})") from None
    return q


def _config(plan: QuantPlan):
    q = _torchao(plan)
    Int4WeightOnlyConfig, Int8WeightOnlyConfig = q.Int4WeightOnlyConfig, q.Int8WeightOnlyConfig
    if plan.scheme.quantize == "int8":
        return Int8WeightOnlyConfig()
    return Int4WeightOnlyConfig(group_size=plan.group, int4_packing_format="opaque")


def check_holders(model: nn.Module, plan: QuantPlan) -> dict[str, nn.Module]:
    """{weight name: its module} for every tensor the plan quantises; QuantError when one is not a Linear's weight."""
    out, bad = {}, []
    for name in plan.quantised:
        mod_path, _, attr = name.rpartition(".")
        mod = model.get_submodule(mod_path)
        if attr != "weight" or not isinstance(mod._parameters.get("weight"), nn.Parameter) or mod.weight.dim() != 2:
            node = plan.nodes[name]
            bad.append(f"layer {node!r} ({model.graph[node].op}): tensor {name[len(node) + 1:]} is not the 2-D "
                       f"`weight` of a module; {plan.scheme.engine} quantises such weights only")
        out[name] = mod
    if bad:
        raise QuantError(f"cannot build {plan.fmt.name} for torch:\n  " + "\n  ".join(bad))
    return out


def quantise(model: nn.Module, plan: QuantPlan) -> nn.Module:
    """Cast `model` to bfloat16 and quantise the plan's Linear weights in place with torchao; returns the model."""
    holders = check_holders(model, plan)
    config = _config(plan)
    quantize_ = _torchao(plan).quantize_
    model.to(torch.bfloat16)
    targets = {id(m) for m in holders.values()}
    with torch.no_grad():
        quantize_(model, config, filter_fn=lambda m, fqn: id(m) in targets)
    model._packed = False
    model.quantisation = plan.metadata()
    return model


def leaves(t: torch.Tensor, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The plain tensors a (possibly torchao) tensor stores, with their dotted paths inside it ('' for a plain one)."""
    if type(t) in (torch.Tensor, nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        yield prefix, t
        return
    names, _ = t.__tensor_flatten__()
    for n in names:
        yield from leaves(getattr(t, n), f"{prefix}.{n}" if prefix else n)


def stored_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """{file name: plain tensor} of everything the model stores, each tied tensor once (at its owner)."""
    ties = getattr(model, "ties", {}) or {}
    out = {}
    for name, p in model.named_parameters():
        if name in ties:
            continue
        for path, leaf in leaves(p.detach()):
            out[f"{name}:{path}" if path else name] = leaf
    return out


def stored_bytes(model: nn.Module) -> int:
    """Bytes of every stored tensor: values, scales, zero points (the live counterpart of the saved file)."""
    return sum(t.numel() * t.element_size() for t in stored_tensors(model).values())


def save_quantised(model: nn.Module, path: str | os.PathLike, plan: QuantPlan) -> None:
    """Write every stored tensor (module docstring) and the plan to a safetensors file."""
    tensors = {k: v.contiguous() for k, v in sorted(stored_tensors(model).items())}
    save_file(tensors, os.fspath(path), metadata={"format": "pt", META_KEY: json.dumps(
        {**plan.metadata(), "target": "torch", "quantize": plan.scheme.quantize})})


def file_bytes(path: str | os.PathLike) -> int:
    """Bytes of the tensors in a safetensors file (its data section, from the header's offsets)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return sum(e["data_offsets"][1] - e["data_offsets"][0] for k, e in header.items() if k != "__metadata__")


def load_quantised(compiled, path: str | os.PathLike) -> nn.Module:
    """The quantised model a `save_quantised` file holds: the model is built and quantised as the file's metadata
    says (on zeros), then every stored tensor is copied in; names, shapes and dtypes must match exactly."""
    from runtime_common.weights import WeightsMismatch
    from . import build
    path = os.fspath(path)
    with safe_open(path, framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "null") or "null")
        if not meta or meta.get("target") != "torch":
            raise QuantError(f"{path}: not a quantised omnic torch file (no {META_KEY} metadata for torch)")
        group = meta["group_size"] if meta["quantize"] == "int4" else None
        plan = quant_plan(compiled, "torch", meta["quantize"], group)
        model = build(compiled, init=False)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        quantise(model, plan)
        want = stored_tensors(model)
        names = set(f.keys())
        shapes = [f"{k}: file {tuple(f.get_slice(k).get_shape())}, model {tuple(want[k].shape)}"
                  for k in sorted(names & set(want)) if tuple(f.get_slice(k).get_shape()) != tuple(want[k].shape)]
        missing, unexpected = sorted(set(want) - names), sorted(names - set(want))
        if missing or unexpected or shapes:
            raise WeightsMismatch(path, missing, unexpected, shapes, [], [])
        with torch.no_grad():
            for k, t in want.items():
                src = f.get_tensor(k)
                if src.dtype != t.dtype:
                    raise WeightsMismatch(path, [], [], [], [f"{k}: file {src.dtype}, model {t.dtype}"], [])
                t.copy_(src)
    return model
