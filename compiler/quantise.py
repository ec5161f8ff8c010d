"""Quantised builds, planned before any work: which format a target builds for `--quantize`, which tensors it
quantises, and every reason it cannot (framework-free: the runtimes' quantisers carry the plan out).

    plan = quant_plan(compiled, "mlx", "4", group_size=None)     # a QuantPlan, or QuantError naming the layer
    plan.fmt.name          'mlx-4bit' (or 'mlx-4bit-g32'): the format of the report's memory tables it builds
    plan.quantised         {tensor name: W} the quantiser replaces (packed values + scales + biases / zero points)
    plan.kept              {tensor name: W} left in the 16-bit dtype (32-bit in GGUF)
    plan.expected_bytes    the report's `memory.weights[fmt]`: what the built weights must hold, exactly

What each target builds (`SCHEMES`; names follow the tool that does the work):
  mlx    4 | 8        `mlx.nn.quantize`, affine, group 32 | 64 (default, as mlx-lm's `convert -q`) | 128; quantises
                      Linear weights and embeddings, so a head tied to its embedding is quantised with it; norms,
                      biases, convolutions, MoE routers and other tensors stay 16-bit; stacked MoE experts cannot
                      be quantised yet
  torch  int8 | int4  torchao weight-only configs (int8 per output row; int4 group 32 | 64 | 128 (default) | 256);
                      Linear weights only (embeddings, the LM head, norms and biases stay 16-bit, as bitsandbytes
                      and transformers' TorchAoConfig leave them); stacked experts cannot be quantised
  gguf   q8_0         the `gguf` package's Q8_0 (blocks of 32) for one llama-family DecoderLM; every 2-D weight,
                      norms in fp32. q4_k is refused: the package (0.19) can read Q4_K but has no quantiser for it
Errors (QuantError, a ValueError) name the layer and the tensor: a group size that does not divide a quantised
tensor's width, a format the target cannot build, a tensor its quantiser cannot hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import cost, registry
from .formats import FORMATS, GROUPS, Format, with_group
from .registry import W


class QuantError(ValueError):
    """A quantised build that cannot be done; the message names the layer, the tensor and what would work."""


@dataclass(frozen=True)
class Scheme:
    target: str
    quantize: str            # the option's value: "4", "int8", "q8_0"
    base: str                # the format of the default group size
    engine: str              # what does the work, for messages and the build's metadata
    bits: int
    block: int = 0           # fixed block size (GGUF) instead of a group size


SCHEMES: dict[str, dict[str, Scheme]] = {
    "mlx": {"4": Scheme("mlx", "4", "mlx-4bit", "mlx.nn.quantize (affine)", 4),
            "8": Scheme("mlx", "8", "mlx-8bit", "mlx.nn.quantize (affine)", 8)},
    "torch": {"int8": Scheme("torch", "int8", "torchao-int8", "torchao Int8WeightOnlyConfig", 8),
              "int4": Scheme("torch", "int4", "torchao-int4", "torchao Int4WeightOnlyConfig (CPU packing)", 4)},
    "gguf": {"q8_0": Scheme("gguf", "q8_0", "q8_0", "gguf Q8_0", 8, block=32)},
}
ALIASES = {("torch", "8"): "int8", ("torch", "4"): "int4", ("gguf", "8"): "q8_0", ("mlx", "mlx-4bit"): "4",
           ("mlx", "mlx-8bit"): "8", ("mlx", "4bit"): "4", ("mlx", "8bit"): "8"}
REFUSED = {("gguf", "q4_k"): "the gguf package (0.19) has no Q4_K quantiser (it only dequantises Q4_K); "
                             "build q8_0, or quantise the q8_0 file with llama.cpp's llama-quantize",
           ("onnx", None): "the ONNX target writes fp32 graphs; quantised builds are for mlx, torch and gguf"}


#: ops whose quantisable tensors the runtimes read only through their linear kernel (`kernels.dense` / `linear`),
#: or look up (Embedding), so that a quantised tensor in their place computes the same thing: other ops slice or
#: fuse their weights (attention pooling's in_proj, fVLM's packed modules) and are refused for mlx and torch
READ_BY_KERNEL = ("Linear", "Embedding", "TransformerBlock", "GQA_MoE_Layer")


@dataclass
class QuantPlan:
    scheme: Scheme
    fmt: Format
    quantised: dict[str, W] = field(default_factory=dict)
    kept: dict[str, W] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)      # tensor name -> its node (layer) name
    expected_bytes: int = 0

    @property
    def group(self) -> int:
        return self.scheme.block or self.fmt.group

    def metadata(self) -> dict:
        """What a build records about its quantisation (mlx-lm's config key `quantization` for MLX)."""
        return {"format": self.fmt.name, "engine": self.scheme.engine, "bits": self.scheme.bits,
                "group_size": self.group, "quantised_tensors": len(self.quantised),
                "kept_tensors": len(self.kept), "weight_bytes": self.expected_bytes}


def scheme_for(target: str, quantize: str) -> Scheme:
    q = str(quantize).lower()
    q = ALIASES.get((target, q), q)
    if (target, q) in REFUSED or (target, None) in REFUSED:
        raise QuantError(f"--quantize {quantize} for target {target}: "
                         + (REFUSED.get((target, q)) or REFUSED[(target, None)]))
    if target not in SCHEMES:
        raise QuantError(f"target {target} has no quantised builds; targets that have: {', '.join(SCHEMES)}")
    if q not in SCHEMES[target]:
        other = [t for t, s in SCHEMES.items() if q in s]
        hint = f" ({q} is built by target {', '.join(other)})" if other else ""
        raise QuantError(f"target {target} cannot build --quantize {quantize}{hint}; it builds: "
                         f"{', '.join(SCHEMES[target])}")
    return SCHEMES[target][q]


def quant_plan(compiled, target: str, quantize: str, group_size: Optional[int] = None) -> QuantPlan:
    """The plan of a quantised build of `compiled` (see the module docstring); raises QuantError before any work."""
    scheme = scheme_for(target, quantize)
    base = FORMATS[scheme.base]
    if group_size is not None and base.name not in GROUPS:
        raise QuantError(f"--group-size does not apply to {base.name} ({scheme.engine}: "
                         + (f"fixed blocks of {scheme.block})" if scheme.block else "one scale per output row)"))
    if group_size is not None and group_size not in GROUPS[base.name]:
        raise QuantError(f"group size {group_size} is not one {scheme.engine} builds for {base.name}; group sizes: "
                         f"{', '.join(map(str, GROUPS[base.name]))}")
    fmt = with_group(base, group_size) if group_size is not None else base
    graph = compiled.raise_for_errors().graph
    plan = QuantPlan(scheme, fmt)
    width = scheme.block or fmt.group
    problems: dict[str, list[tuple[str, str]]] = {}      # what is wrong -> [(layer, tensor)] it is wrong in
    if target == "gguf":
        for node, what in _gguf_problems(graph):
            problems.setdefault(what, []).append((node, ""))
    for node in graph.nodes():
        if node.op == "Input":
            continue
        for key, w in registry.get(node.op).weights(node.params).items():
            if w.tied_to:
                continue
            name = f"{node.name}.{key}"
            plan.nodes[name] = node.name
            if w.role not in fmt.quantises or len(w.shape) < 2:
                plan.kept[name] = w
                continue
            if target in ("mlx", "torch") and node.op not in READ_BY_KERNEL:
                what = (f"({node.op}): its weights are not read through the runtime's linear kernel, so "
                        f"{scheme.engine} cannot replace them; layer types it quantises: "
                        f"{', '.join(READ_BY_KERNEL)}")
            elif target in ("mlx", "torch") and (w.experts or len(w.shape) != 2):
                what = (f"({node.op}) stacked experts: " + ("torchao's weight-only configs quantise 2-D weights only"
                        if target == "torch" else "omnic-MLX holds them as bare arrays, which mlx.nn.quantize cannot "
                        "reach (a quantised SwitchLinear-like holder is not written yet)"))
            elif width and w.shape[-1] % width:
                fits = [g for g in GROUPS.get(base.name, ()) if w.shape[-1] % g == 0]
                hint = (f"group sizes that divide it: {', '.join(map(str, fits))}" if fits else
                        f"no group size {scheme.engine} offers divides it")
                kind = "block size" if scheme.block else "group size"
                what = f"({node.op}) width {w.shape[-1]} is not a multiple of the {kind} {width} ({hint})"
            else:
                what = None
            if what:
                problems.setdefault(what, []).append((node.name, key))
            plan.quantised[name] = w
    if problems:
        raise QuantError(f"cannot build {fmt.name} for {target}:\n  " + "\n  ".join(
            _where(places) + " " + what for what, places in problems.items()))
    weights = (compiled.report or {}).get("memory", {}).get("weights", {})
    plan.expected_bytes = weights[fmt.name] if fmt.name in weights else round(
        cost.weight_bytes(cost.cost_nodes(graph, 1, 1, 1), fmt))       # the report's figure, same code
    return plan


#: what llama.cpp's 'llama' architecture computes: a block of these settings (anything else it would run wrongly)
LLAMA_BLOCK = {"names": "llama", "mlp": "swiglu", "norm": "rmsnorm", "norm_offset": 0.0, "post_norms": False,
               "mlp_bias": False, "attn_bias": [], "fused_qkv": False, "causal": True, "qk_norm": False,
               "attn_scale": None, "sliding_window": None, "layer_type": "full_attention", "rope": "1d",
               "layer_scale": None}
LLAMA_OPS = ("Embedding", "TransformerBlock", "RMSNorm", "Linear")


def _where(places: list[tuple[str, str]]) -> str:
    """"layers 'a', 'b' and 2 more, tensors q.weight, k.weight" (one line for a problem shared by a repeated block)."""
    def few(xs: list[str], one: str, many: str) -> str:
        xs = list(dict.fromkeys(xs))
        if len(xs) == 1:
            return f"{one} {xs[0]}"
        return f"{many} {', '.join(xs[:3])}" + (f" and {len(xs) - 3} more" if len(xs) > 3 else "")
    layers = few([repr(n) for n, _ in places], "layer", "layers")
    keys = [k for _, k in places if k]
    return layers + (", " + few(keys, "tensor", "tensors") if keys else "")


def _gguf_problems(graph) -> list[tuple[str, str]]:
    """(layer, what) for each way the graph is not one llama-family decoder (Embedding, TransformerBlocks, RMSNorm,
    Linear head: what llama.cpp's 'llama' architecture computes)."""
    nodes = [n for n in graph.nodes() if n.op != "Input"]
    ops = [n.op for n in nodes]
    if not nodes or ops[0] != "Embedding" or ops[-2:] != ["RMSNorm", "Linear"] or set(ops[1:-2]) != {
            "TransformerBlock"}:
        bad = next((n for n in nodes if n.op not in LLAMA_OPS), nodes[0] if nodes else None)
        return [(bad.name if bad else "(none)", f"({bad.op if bad else 'empty spec'}): GGUF export covers one "
                 f"llama-family DecoderLM (Embedding, TransformerBlocks, RMSNorm, Linear head); this graph is "
                 f"{' -> '.join(dict.fromkeys(ops))}")]
    out = []
    for n in nodes[1:-2]:
        p = n.params
        wrong = [f"{k}={getattr(p, k)!r} (llama: {v!r})" for k, v in LLAMA_BLOCK.items() if getattr(p, k) != v]
        if p.rope_dim != p.head_dim:
            wrong.append(f"rope_dim={p.rope_dim} (llama: the head size {p.head_dim})")
        if wrong:
            out.append((n.name, f"(TransformerBlock): {', '.join(wrong)}: not what llama.cpp's 'llama' "
                                f"architecture computes"))
    return out
