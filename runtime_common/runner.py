"""`omnic run` and `omnic generate`: load a spec or a build directory into torch or MLX, feed it, and say how fast
and how much memory, beside the compiler's prediction (as mlx-lm's `generate` prints tokens-per-sec and peak memory).

    m = load(source, runtime="torch", weights=None, seed=0, dtype="float32", overrides={}, batch=1, context=64)
    inputs = make_inputs(m, tokens=16, images={"image": "cat.png"}, seed=0)     # {name: numpy array}
    run(m, inputs) -> dict;  generate(m, prompt_ids, 20, inputs) -> dict

A source is a spec file (compiled here, with `overrides`) or a directory written by `omnic build` (its model.py's
graph and report.json; its model.safetensors unless other weights are given). Weights come from a safetensors file
(torch layout, either runtime's `save_weights`) or are drawn from `seed`. Inputs are made from what the graph
declares (`runtime_common/input_spec.py`): token ids drawn from the seed inside the vocabulary, with the image
placeholder tokens a MergeImageTokens node needs in front; images from files (.npy, .safetensors, or PNG / JPEG with
Pillow; resized to the compiled size, scaled to [0, 1], normalised by `mean` / `std`) or drawn from the seed.

Memory: MLX's allocator peak (`mx.get_peak_memory()`, what mlx-lm prints); torch's peak allocated bytes on CUDA, and
on the CPU the peak of live tensors that torch's MemTracker counts (weights, caches, activations) over one prefill.
The prediction is the report's `memory.inference` in the format of the dtype at the run's batch and length.
Frameworks (and numpy) are imported only when a runtime is chosen.
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from compiler.graph_data import from_data, to_data
from runtime_common.input_spec import InputSpec, describe

if TYPE_CHECKING:                  # the annotations' np.ndarray; numpy itself is imported where it is used
    import numpy as np

FORMAT_OF_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class RunError(ValueError):
    """Bad usage of run / generate (a file that does not fit, a missing tokenizer): the message says what to do."""


@dataclass
class Loaded:
    runtime: str                 # "torch" | "mlx"
    model: Any
    graph: Any
    report: Optional[dict]
    specs: list[InputSpec]
    dtype: str
    settings: dict = field(default_factory=dict)
    weights: str = "random"      # where the weights came from


# --- loading ---------------------------------------------------------------------------------------------------------
def _build_dir(path: str) -> tuple[dict, dict, str]:
    """(graph data, report, runtime) of a directory written by `omnic build`."""
    model_py = os.path.join(path, "model.py")
    if not os.path.isfile(model_py):
        raise RunError(f"{path} is not a build directory (no model.py); build one with "
                       f"`omnic build SPEC --target torch -o {path}`, or pass a spec file")
    spec = importlib.util.spec_from_file_location(f"omnic_build_{abs(hash(os.path.abspath(path)))}", model_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    report = {}
    if os.path.isfile(os.path.join(path, "report.json")):
        with open(os.path.join(path, "report.json"), encoding="utf-8") as f:
            report = json.load(f)
    runtime = "mlx" if "import runtime_mlx" in open(model_py, encoding="utf-8").read() else "torch"
    return mod.GRAPH, report, runtime


def load(source: str, runtime: Optional[str] = None, weights: Optional[str] = None, seed: int = 0,
         dtype: str = "float32", overrides: Optional[dict] = None, batch: Optional[int] = None,
         context: Optional[int] = None, frames: Optional[int] = None, compiled=None) -> Loaded:
    """The model of a spec (or of `compiled`) or of a build directory, in `runtime`, with weights."""
    if dtype not in FORMAT_OF_DTYPE:
        raise RunError(f"dtype {dtype!r}: one of {', '.join(FORMAT_OF_DTYPE)}")
    if compiled is not None or not os.path.isdir(source):
        if compiled is None:
            from compiler import compile
            compiled = compile(source, overrides=overrides, batch=batch, context=context, frames=frames,
                               format=FORMAT_OF_DTYPE[dtype])
        compiled.raise_for_errors()
        data, report, default_rt = to_data(compiled.graph), compiled.report, "torch"
    else:
        data, report, default_rt = _build_dir(source)
        if weights is None and os.path.isfile(os.path.join(source, "model.safetensors")):
            weights = os.path.join(source, "model.safetensors")
    runtime = runtime or default_rt
    if runtime == "torch":
        import runtime_torch as rt
    elif runtime == "mlx":
        import runtime_mlx as rt
    else:
        raise RunError(f"runtime {runtime!r}: torch or mlx")
    model = rt.from_graph_data(data, dtype=dtype, seed=seed, init=weights is None)
    if weights is not None:
        if not os.path.isfile(weights):
            raise RunError(f"weights file not found: {weights}")
        try:
            rt.load_weights(model, weights, cast=True)
        except ValueError as e:            # WeightsMismatch: one line per tensor
            raise RunError(str(e)) from None
    graph = from_data(data)
    return Loaded(runtime, model, graph, report, describe(graph), dtype, dict((report or {}).get("settings", {})),
                  weights or f"random (seed {seed})")


# --- inputs ----------------------------------------------------------------------------------------------------------
def read_image(path: str, spec: InputSpec, mean: float = 0.0, std: float = 1.0) -> "np.ndarray":
    """A (C, H, W) float32 array at the spec's size: .npy / .safetensors as stored, PNG / JPEG through Pillow."""
    import numpy as np

    c, h, w = (d.const if d.is_const else None for d in spec.shape[-3:])
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise RunError(f"image file not found: {path}")
    if ext == ".npy":
        arr = np.load(path).astype(np.float32)
    elif ext == ".safetensors":
        from safetensors.numpy import load_file
        tensors = load_file(path)
        arr = tensors.get(spec.name, next(iter(tensors.values()))).astype(np.float32)
    else:
        try:
            from PIL import Image
        except ImportError:
            raise RunError(f"reading {ext or 'this'} images needs Pillow (pip install pillow); .npy and "
                           ".safetensors need nothing") from None
        try:
            img = Image.open(path).convert("RGB" if c == 3 else "L").resize((w, h), Image.BICUBIC)
        except OSError as e:
            raise RunError(f"cannot read image {path}: {e}") from None
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)            # (C, H, W)
        arr = (arr - mean) / std
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def make_inputs(m: Loaded, tokens: int = 16, images: Optional[dict[str, str]] = None, seed: int = 0,
                prompt_ids: Optional[list[int]] = None, mean: float = 0.0, std: float = 1.0,
                batch: int = 1, frames: Optional[int] = None) -> dict[str, "np.ndarray"]:
    """One numpy array per model input: the model's declared example inputs (`runtime_common.inputs`: `tokens` text
    ids plus any image placeholders, random images), with `prompt_ids` as the text (after the placeholders) when
    given, and images read from `images` (name -> file)."""
    import numpy as np
    from runtime_common.inputs import example_inputs, sizes
    images = dict(images or {})
    unknown = set(images) - {s.name for s in m.specs}
    if unknown:
        raise RunError(f"no model input named {', '.join(sorted(unknown))}; inputs: "
                       + ", ".join(s.name for s in m.specs))
    env = sizes(m.graph, {"B": batch, "T": tokens if prompt_ids is None else len(prompt_ids),
                          "F": frames or int(m.settings.get("frames") or 8)})
    if prompt_ids is not None:
        ids_specs = [s for s in m.specs if s.kind == "ids"]
        lead = [p.token_id for s in ids_specs for p in s.placeholders for _ in range(p.count)]
        env["T"] = len(lead) + len(prompt_ids)
    out = example_inputs(m.graph, env, seed)
    for s in m.specs:
        if s.kind == "ids" and prompt_ids is not None:
            out[s.name] = np.array([lead + list(prompt_ids)] * batch, dtype=np.int64)
        elif s.name in images:
            one = read_image(images[s.name], s, mean, std)
            shape = out[s.name].shape
            out[s.name] = np.ascontiguousarray(np.broadcast_to(one, shape).astype(np.float32)
                                               if one.shape == shape[-one.ndim:] else one)
    return out


def _to_runtime(m: Loaded, arrays: dict[str, "np.ndarray"]) -> dict:
    if m.runtime == "torch":
        import torch
        dt = getattr(torch, m.dtype)
        dev = next(iter(m.model.parameters())).device
        return {k: torch.from_numpy(v).to(dev, dt if v.dtype.kind == "f" else torch.int64) for k, v in arrays.items()}
    import mlx.core as mx
    dt = getattr(mx, m.dtype)
    return {k: mx.array(v).astype(dt) if v.dtype.kind == "f" else mx.array(v).astype(mx.int32) for k, v in arrays.items()}


# --- measuring -------------------------------------------------------------------------------------------------------
def predicted(m: Loaded) -> Optional[int]:
    mem = ((m.report or {}).get("memory") or {}).get("inference") or {}
    return mem.get(FORMAT_OF_DTYPE[m.dtype])


def _sync(m: Loaded, value=None) -> None:
    if m.runtime == "mlx":
        import mlx.core as mx
        mx.eval(value) if value is not None else mx.synchronize()
    else:
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()


class _Peak:
    """Peak memory over a block: MLX's allocator peak, torch's CUDA peak, or torch's MemTracker on the CPU."""

    def __init__(self, m: Loaded, track_cpu: bool = True):
        self.m, self.track_cpu, self.value, self.how = m, track_cpu, None, ""

    def __enter__(self):
        if self.m.runtime == "mlx":
            import gc
            import mlx.core as mx
            gc.collect()
            mx.synchronize()
            mx.clear_cache()
            mx.reset_peak_memory()
        else:
            import torch
            self.dev = next(iter(self.m.model.parameters())).device
            if self.dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.dev)
            elif self.track_cpu:
                from torch.distributed._tools.mem_tracker import MemTracker
                self.tracker = MemTracker()
                self.tracker.track_external(self.m.model)
                self.tracker.__enter__()
        return self

    def __exit__(self, *exc):
        if self.m.runtime == "mlx":
            import mlx.core as mx
            self.value, self.how = mx.get_peak_memory(), "mx.get_peak_memory"
        elif self.dev.type == "cuda":
            import torch
            self.value, self.how = torch.cuda.max_memory_allocated(self.dev), "torch.cuda.max_memory_allocated"
        elif self.track_cpu:
            self.tracker.__exit__(*exc)
            snap = self.tracker.get_tracker_snapshot("peak")
            self.value, self.how = max(v["Total"] for v in snap.values()), "torch MemTracker, live tensors"
        return False


def run(m: Loaded, arrays: dict[str, "np.ndarray"]) -> dict:
    """One forward: {"outputs": {name: (shape, dtype, mean, std)}, "seconds", "peak", "predicted", ...}."""
    inputs = _to_runtime(m, arrays)
    if m.runtime == "torch":
        import torch
        ctx = torch.inference_mode()
    else:
        import contextlib
        ctx = contextlib.nullcontext()
    with ctx:
        out = m.model(**inputs)                    # a warm-up, also to fail early and clearly
        _sync(m, out)
        t = time.perf_counter()
        out = m.model(**inputs)
        _sync(m, out)
        secs = time.perf_counter() - t
        del out
        with _Peak(m) as peak:
            out = m.model(**inputs)
            _sync(m, out)
    stats = {}
    for k, v in out.items():
        if m.runtime == "torch":
            a = v.double()
            mean, std = a.mean().item(), a.std(correction=0).item()
        else:
            import mlx.core as mx
            a = v.astype(mx.float32)
            mean, std = mx.mean(a).item(), mx.sqrt(mx.var(a)).item()
        stats[k] = {"shape": list(v.shape), "mean": float(mean), "std": float(std)}
    n_tok = int(next((arrays[s.name].size for s in m.specs if s.kind == "ids"), 0))
    return {"outputs": stats, "seconds": secs, "tokens": n_tok, "peak": peak.value, "peak_how": peak.how,
            "predicted": predicted(m)}


def generate(m: Loaded, arrays: dict[str, "np.ndarray"], max_new_tokens: int, do_sample: bool = False,
             temperature: float = 1.0, top_k: Optional[int] = None, seed: int = 0,
             eos_token_id: Optional[int] = None) -> dict:
    """Decode after the prompt: {"tokens": [[ids]], "prompt_tps", "generation_tps", "peak", "predicted", ...}."""
    import numpy as np

    ids_spec = [s for s in m.specs if s.kind == "ids"]
    if len(ids_spec) != 1:
        raise RunError(f"generate needs a model with one token-id input; this one has "
                       f"{', '.join(s.name for s in m.specs)}")
    name = ids_spec[0].name
    inputs = _to_runtime(m, arrays)
    ids = inputs.pop(name)
    if m.runtime == "torch":
        from runtime_torch import generate as gen_mod
    else:
        from runtime_mlx import generate as gen_mod
    stamps: list[float] = []
    base = gen_mod.DecodeSession

    class Timed(base):                              # the time each step starts: the first is the prefill
        def step(self, *a, **kw):
            stamps.append(time.perf_counter())
            return super().step(*a, **kw)

    kw = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, seed=seed, eos_token_id=eos_token_id)
    gen_mod.DecodeSession = Timed
    try:
        with _Peak(m, track_cpu=False) as peak:
            out = gen_mod.generate(m.model, ids, max_new_tokens, **kw, **inputs)
            _sync(m, out)
        end = time.perf_counter()
    finally:
        gen_mod.DecodeSession = base
    if peak.value is None and m.runtime == "torch":      # CPU: the tracker would slow decoding; measure a prefill
        session = base(m.model, reserve=ids.shape[1] + max_new_tokens)
        import torch
        with torch.no_grad(), _Peak(m) as peak:
            session.step(ids, last=True, **inputs)
        del session
    tokens = np.array(out.tolist())[:, ids.shape[1]:]
    b, t = ids.shape[0], ids.shape[1]
    n = tokens.shape[1]
    prefill = (stamps[1] if len(stamps) > 1 else end) - stamps[0]
    decode = end - stamps[1] if len(stamps) > 1 else 0.0
    return {"tokens": tokens.tolist(), "prompt_tokens": b * t, "prompt_tps": b * t / prefill if prefill else None,
            "generated": b * n, "generation_tps": b * (n - 1) / decode if decode > 0 and n > 1 else None,
            "peak": peak.value, "peak_how": peak.how, "predicted": predicted(m)}
