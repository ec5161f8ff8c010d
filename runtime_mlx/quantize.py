"""Quantised MLX models through `mlx.nn.quantize`, as mlx-lm's `convert -q` makes them, and mlx-lm's own folders.

    plan = compiler.quantise.quant_plan(compiled, "mlx", "4", group_size=64)
    model = quantise(runtime_mlx.build(compiled, dtype="bfloat16", seed=0), plan)
    save_quantised(model, "model.safetensors", plan)        # weight (packed uint32), scales, biases per layer
    model = load_quantised(compiled, "model.safetensors")
    model = load_mlx_lm(folder)                              # a folder mlx-lm's convert(quantize=True) wrote

`mlx.nn.quantize(model, group_size, bits, class_predicate=...)` replaces every leaf module the plan names (omnic's
Linear layers and the boxes holding a block's projections become `nn.QuantizedLinear`, which `kernels.dense` runs;
embeddings `QuantizedEmbedding`; each through its `to_quantized`); mlx-lm's predicate also skips layers whose width the group size does not divide, which
`compiler.quantise` refuses up front instead. What stays 16-bit (bf16, or the model's dtype): norms, biases,
convolutions, MoE routers and every tensor not held by a Linear or an Embedding; a head tied to its embedding is
computed from the quantised table (`as_linear`, as mlx-lm's tied models do). Stacked MoE experts and the linear
weights of vision / resampler / head ops are not held by such modules: the plan's check names them (QuantError)
before anything is quantised. Modules that the blocks reach through plain attributes (`self.q`) and tied heads are
re-pointed at the new modules.

Files: every parameter under its name (mlx-lm's names: `...q_proj.weight` uint32, `...q_proj.scales`,
`...q_proj.biases`), the kept tensors in torch layout like every omnic weights file, and the plan in the
metadata (`omnic_quantization`); `quantization` in mlx-lm's config terms is {"group_size", "bits", "mode"}.
"""
from __future__ import annotations

import json
import os

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten

from compiler.quantise import QuantError, QuantPlan, quant_plan

from . import layout

META_KEY = "omnic_quantization"


class QuantizedEmbedding(nn.QuantizedEmbedding):
    """mlx's QuantizedEmbedding with omnic's embedding `scale` (Gemma multiplies looked-up rows by sqrt(D))."""

    @classmethod
    def from_embedding(cls, emb, group_size: int, bits: int, mode: str = "affine"):
        n, d = emb.weight.shape
        q = cls(n, d, group_size, bits, mode=mode)
        q.weight, q.scales, *biases = mx.quantize(emb.weight, group_size, bits, mode=mode)
        q.biases = biases[0] if biases else None
        object.__setattr__(q, "scale", emb.scale)
        return q

    def __call__(self, ids):
        x = super().__call__(ids)                         # (B, T) -> (B, T, D)
        scale = getattr(self, "scale", None)
        return x if scale is None else x * mx.array(scale, dtype=x.dtype)


def _leaves(model) -> dict[str, nn.Module]:
    return dict(tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module))


def check_holders(model, plan: QuantPlan) -> set[str]:
    """The module paths that hold the plan's quantised tensors (each a leaf with `to_quantized` whose `weight` it
    is); QuantError naming the layers whose tensors no such module holds."""
    leaves = _leaves(model)
    paths, bad = set(), {}
    for name in plan.quantised:
        path, _, attr = name.rpartition(".")
        mod = leaves.get(path)
        if attr != "weight" or mod is None or not hasattr(mod, "to_quantized"):
            node = plan.nodes[name]
            bad.setdefault(model.graph[node].op, []).append(f"{node!r}: {name[len(node) + 1:]}")
            continue
        paths.add(path)
    if bad:
        raise QuantError(f"cannot build {plan.fmt.name} for mlx: mlx.nn.quantize quantises Linear and Embedding "
                         f"layers; these tensors are held otherwise:\n  " + "\n  ".join(
                             f"{op} {', '.join(v[:3])}" + (f" and {len(v) - 3} more" if len(v) > 3 else "")
                             for op, v in bad.items()))
    return paths


def quantise(model, plan: QuantPlan):
    """Quantise the plan's tensors of `model` in place with `mlx.nn.quantize` (a float32 model is cast to bfloat16
    first: scales, biases and kept tensors are 16-bit, as mlx-lm's are and the accounting counts them); returns
    the model."""
    paths = check_holders(model, plan)
    if any(x.dtype == mx.float32 for _, x in tree_flatten(model.parameters())):
        model.set_dtype(mx.bfloat16)
    before = _leaves(model)
    nn.quantize(model, plan.group, plan.scheme.bits, mode="affine",
                class_predicate=lambda path, m: path in paths)
    after = _leaves(model)
    new = {id(before[p]): after[p] for p in paths}

    def swap(v):                  # a handle: a module, a (module, key) reference, a tuple of them
        if id(v) in new:
            return new[id(v)]
        if type(v) is tuple:
            return tuple(swap(x) for x in v)
        return v

    for m in [model, *(x for _, x in model.named_modules())]:        # handles (`self.q`, `self.shared_up`) and ties
        for k, v in list(vars(m).items()):
            if isinstance(v, (nn.Module, tuple)) and swap(v) is not v:
                object.__setattr__(m, k, swap(v))
        ties = vars(m).get("_omnic_ties")
        if ties:
            for a, ref in list(ties.items()):
                ties[a] = swap(ref)
    nodes = model._nodes                                               # nodes that were leaves themselves
    for name, mod in list(nodes.items()):
        nodes[name] = new.get(id(mod), mod)
    model._make_plan()
    object.__setattr__(model, "quantisation", plan.metadata())
    mx.eval(model.parameters())
    return model


def stored_arrays(model) -> dict[str, mx.array]:
    """{name: array} of everything the model stores (tied tensors once): packed weights, scales, biases and the
    kept tensors, these in torch layout (the file's convention)."""
    out = {}
    for name, x in tree_flatten(model.parameters()):
        w = model.weight_decls.get(name)
        out[name] = x if w is None or x.dtype == mx.uint32 else layout.to_torch(
            x, w.shape, model.perms[name], source="mlx", name=name)
    return out


def stored_bytes(model) -> int:
    return sum(x.nbytes for x in stored_arrays(model).values())


def save_quantised(model, path: str | os.PathLike, plan: QuantPlan) -> None:
    arrays = stored_arrays(model)
    mx.eval(list(arrays.values()))
    mx.save_safetensors(os.fspath(path), dict(sorted(arrays.items())), metadata={"format": "mlx", META_KEY: json.dumps(
        {**plan.metadata(), "target": "mlx", "quantize": plan.scheme.quantize, "mode": "affine"})})


def _load_into(model, arrays: dict[str, mx.array], source: str) -> None:
    """Assign `arrays` (kept tensors in torch layout) to a quantised model; names and shapes must match exactly."""
    from runtime_common.weights import WeightsMismatch
    have = dict(tree_flatten(model.parameters()))
    conv = {}
    for name, x in arrays.items():
        w = model.weight_decls.get(name)
        conv[name] = x if w is None or x.dtype == mx.uint32 or name not in have else layout.to_mlx(
            x, w.shape, model.perms[name], source="torch", name=name)
    missing, unexpected = sorted(set(have) - set(conv)), sorted(set(conv) - set(have))
    shapes = [f"{n}: file {tuple(conv[n].shape)}, model {tuple(have[n].shape)}" for n in sorted(set(have) & set(conv))
              if tuple(conv[n].shape) != tuple(have[n].shape)]
    dtypes = [f"{n}: file {conv[n].dtype}, model {have[n].dtype}" for n in sorted(set(have) & set(conv))
              if conv[n].dtype != have[n].dtype and (conv[n].dtype == mx.uint32 or have[n].dtype == mx.uint32)]
    if missing or unexpected or shapes or dtypes:
        raise WeightsMismatch(source, missing, unexpected, shapes, dtypes, [])
    model.load_weights([(n, x.astype(have[n].dtype)) for n, x in conv.items()], strict=True)
    mx.eval(model.parameters())


def _quantised_model(compiled, bits: int, group: int, dtype):
    from . import build
    plan = quant_plan(compiled, "mlx", str(bits), group)
    return quantise(build(compiled, dtype=dtype, init=False), plan), plan


def load_quantised(compiled, path: str | os.PathLike):
    """The model a `save_quantised` file holds (built and quantised as its metadata says, then loaded)."""
    path = os.fspath(path)
    arrays, meta = mx.load(path, format="safetensors", return_metadata=True)
    info = json.loads(meta.get(META_KEY, "null") or "null")
    if not info or info.get("target") != "mlx":
        raise QuantError(f"{path}: not a quantised omnic MLX file (no {META_KEY} metadata for mlx)")
    kept = next((x.dtype for n, x in arrays.items() if x.dtype not in (mx.uint32,)), mx.bfloat16)
    model, _ = _quantised_model(compiled, info["bits"], info["group_size"], kept)
    _load_into(model, arrays, path)
    return model


def load_mlx_lm(folder: str | os.PathLike):
    """(compiled, model) of a quantised model folder written by mlx-lm (config.json with its `quantization` and
    model*.safetensors): the spec comes from the config (`compiler.importers.hf`), names from the importer's key
    map; the packed weights, scales and biases are loaded as they are."""
    from compiler import compile
    from compiler.importers import hf
    from runtime_common.weights import map_names
    folder = os.fspath(folder)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    q = cfg.get("quantization") or cfg.get("quantization_config")
    if not q:
        raise QuantError(f"{folder}/config.json has no 'quantization': not a quantised mlx-lm folder")
    if q.get("mode", "affine") != "affine" or any(isinstance(v, dict) for v in q.values()):
        raise QuantError(f"{folder}: quantization {q} (mode other than affine, or per-layer settings) is not built "
                         f"by omnic's MLX target")
    compiled = compile(hf.spec_from_hf_config(cfg)).raise_for_errors()
    arrays = {}
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".safetensors"):
            arrays.update(mx.load(os.path.join(folder, fname)))
    renamed, clashes = map_names(arrays, hf.hf_key_map(cfg["model_type"]))
    if clashes:
        raise QuantError(f"{folder}: names collide after renaming: {clashes[:3]}")
    kept = next((x.dtype for x in arrays.values() if x.dtype != mx.uint32), mx.bfloat16)
    model, _ = _quantised_model(compiled, q["bits"], q["group_size"], kept)
    _load_into(model, {new: arrays[old] for new, old in renamed.items()}, folder)
    return compiled, model
