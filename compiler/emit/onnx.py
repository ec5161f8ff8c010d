"""`omnic build --target onnx`: a compiled model exported to ONNX through torch, checked, and compared.

`write(compiled, out_dir, weights=False, seed=0, weights_from=None, key_map=())` (called by `compiler.emit.build`,
which makes `out_dir` fresh):
  1. builds the torch model (`runtime_torch.build`, weights initialised from `seed`, eval mode), or, with
     `weights_from`, reads a checkpoint into a model built on the meta device (no initialisation, no second copy);
  2. traces it with `torch.export.export` (non-strict) on example inputs of batch 2 (EXPORT_SIZES: no dimension
     is 1, so none is frozen), every symbolic input dimension marked dynamic: B -> "batch", T -> "seq",
     F -> "frames" (T at most the spec's context, F at most its frames). Where the model's code narrows one (fVLM
     loops over frames in Python: frames stay the traced count), torch.export's suggested range or constant is
     taken and written to onnx.json "dims"; batch and length must stay dynamic. Each kind of repeated layer (the
     blocks of a stack) is traced once and called for every copy (compiler/emit/onnx_repeat.py; onnx.json
     "traced_once": {the traced copy: copies}; where that trace fails, every copy is traced, and onnx.json says why
     in "traced_once_failed"). Then compiler/emit/onnx_convert.py
     converts the program (torch's ONNX exporter without its second trace) and optimises it (onnxscript's passes
     without the pattern rewriter);
  3. saves model.onnx: inputs named as the model's inputs, outputs as the report's (`node` or `node.output`);
     weights over EXTERNAL_DATA_BYTES in model.onnx.data, written tensor by tensor;
  4. runs `onnx.checker.check_model(full_check=True)`;
  5. takes torch's outputs on inputs of other sizes (CHECK_SIZES: batch 1, another length), frees torch's weights,
     then runs model.onnx in onnxruntime on the same inputs and compares: |onnx - torch| <= ATOL + RTOL |torch|,
     else BuildError. Torch's weights and onnxruntime's are never held at once: the peak is about 1.5x the
     weights' bytes (bench/bench_onnx.py);
  6. writes report.json (the compiler's report) and onnx.json (names, dynamic dimensions, sizes, differences and
     the conversion path).
An ONNX graph holds its weights, so model.onnx always carries them; `weights=True` also writes them as
model.safetensors (runtime_torch's names), for loading the same values into torch.
A progress display (rich, on stderr) names each step on a terminal; off a terminal, runtime_common/progress.py
prints a line per step only once the export has run a few seconds (OMNIC_PROGRESS=0: never).
Source: https://pytorch.org/docs/stable/onnx_export.html (dynamic_shapes with torch.export.Dim).
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import warnings
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

import runtime_torch
from runtime_common import inputs
from runtime_common.progress import steps
from runtime_torch.weights import save_weights

from . import onnx_convert, onnx_repeat
from .build import BuildError

EXPORT_SIZES = {"B": 2, "T": 6, "F": 2}     # example inputs of the trace
CHECK_SIZES = {"B": 1, "T": 9, "F": 3}      # inputs of the comparison: other sizes than the trace's
DIM_NAMES = {"B": "batch", "T": "seq", "F": "frames"}
ATOL = RTOL = 1e-4
EXTERNAL_DATA_BYTES = 64 * 2**20             # above this the weights go to model.onnx.data, tensor by tensor


# --- inputs --------------------------------------------------------------------------------------------------------
def sizes(compiled, want: dict[str, int]) -> dict[str, int]:
    """Symbol values for example inputs (`runtime_common/inputs.py`), T and F within the spec's context and frames."""
    s = compiled.settings
    out = inputs.sizes(compiled.graph, want)
    for sym, limit in (("T", s["context"]), ("F", s["frames"])):
        out[sym] = max(2, min(out[sym], limit))
    return out


def example_inputs(graph, env: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """One tensor per model input at the sizes `env`, valid for their consumers (`runtime_common/inputs.py`)."""
    return {k: torch.from_numpy(v) for k, v in inputs.example_inputs(graph, env, seed).items()}


def dynamic_shapes(graph, compiled) -> tuple[dict[int, Any], ...]:
    """Per model input, {axis: torch.export.Dim} for each axis that is exactly a symbol (B, T or F)."""
    s = compiled.settings
    limits = {"B": None, "T": max(s["context"], 3), "F": max(s["frames"], 3)}
    dims = {sym: torch.export.Dim(DIM_NAMES[sym], min=1, **({"max": m} if m else {})) for sym, m in limits.items()}
    specs = []
    for n in graph.nodes():
        if n.op == "Input":
            specs.append({i: dims[str(d)] for i, d in enumerate(n.out.shape) if not d.is_const and str(d) in dims})
    return tuple(specs)


def dim_ranges(graph, shapes) -> dict[str, Any]:
    """What the export kept of each symbol: {"batch": {"min", "max"}, ...}, or the constant it was fixed to."""
    out: dict[str, Any] = {}
    inputs = [n for n in graph.nodes() if n.op == "Input"]
    for n, spec in zip(inputs, shapes):
        for axis, d in spec.items():
            name = DIM_NAMES[str(n.out.shape[axis])]
            out[name] = d if isinstance(d, int) else {"min": d.min, "max": d.max if d.max < 2**62 else None}
    return out


class Positional(torch.nn.Module):
    """An OmnicModel with positional inputs and a tuple of outputs (ONNX has neither keywords nor dicts)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.input_names = tuple(model.input_names)
        self.output_names = tuple(model.output_names)

    def forward(self, *xs):
        out = self.model(**dict(zip(self.input_names, xs)))
        return tuple(out[k] for k in self.output_names)


# --- steps ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """torch.export and the ONNX exporter warn and log freely (torchvision absent, deprecations): keep the
    terminal for our own progress and errors."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch.fx",
                                              "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def _no_stack_traces():
    """torch.fx skips the Python stack trace of each traced node (1 s of the 222M model's 2k nodes; only error
    messages would use them)."""
    cfg = torch.fx.config
    old = getattr(cfg, "do_not_emit_stack_traces", None)
    cfg.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        cfg.do_not_emit_stack_traces = old


def _first_line(e: Exception) -> str:
    text = str(e).split("## Exception summary", 1)[-1].strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def trace(wrapped: Positional, args: tuple, shapes):
    """torch.export (non-strict: the runtime's Python as it is) -> (ExportedProgram, the dynamic shapes used).
    When the model's code narrows a dimension (a Python loop over frames, a branch on the length), torch.export
    suggests a narrower range or a constant; the suggestions are taken (up to 3 rounds), except that batch and
    length must stay dynamic."""
    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes
    names = [{axis: d.__name__ for axis, d in spec.items()} for spec in shapes]
    for _ in range(3):
        try:
            with _quiet():
                return torch.export.export(wrapped, args, dynamic_shapes={"xs": shapes}, strict=False), shapes
        except torch._dynamo.exc.UserError as e:
            if "Suggested fixes" not in str(e):
                raise BuildError(f"torch.export could not trace the model: {_first_line(e)}") from e
            fixes = [ln for ln in str(e).split("Suggested fixes:", 1)[1].splitlines() if " = " in ln]
            shapes = tuple(refine_dynamic_shapes_from_suggested_fixes("Suggested fixes:\n" + "\n".join(fixes),
                                                                      {"xs": shapes})["xs"])
            fixed = {names[i][axis] for i, spec in enumerate(shapes) for axis, d in spec.items() if isinstance(d, int)}
            if fixed & {"batch", "seq"}:
                raise BuildError(f"the model's code fixes its {' and '.join(sorted(fixed & {'batch', 'seq'}))}: "
                                 f"{_first_line(e)}") from e
        except Exception as e:
            raise BuildError(f"torch.export could not trace the model: {_first_line(e)}") from e
    raise BuildError("torch.export kept narrowing the dynamic dimensions; gave up after 3 rounds")


def export(wrapped: Positional, example: dict[str, torch.Tensor], shapes, step=lambda text: None,
           kinds: Sequence[Sequence[str]] = ()):
    """trace(), then the ONNX conversion of the program (compiler/emit/onnx_convert.py): (onnx_ir.Model whose
    dynamic axes carry DIM_NAMES, not optimised; the dynamic shapes used; the conversion path). Tracing is done
    here, not by torch.onnx.export, which would fall back silently to slower strategies when it fails. `kinds`:
    node names of each kind of repeated layer to trace once (compiler/emit/onnx_repeat.py; none: every layer is
    traced)."""
    args = tuple(example[n] for n in wrapped.input_names)
    step("tracing (torch.export, dynamic batch and length)")
    with _no_stack_traces(), onnx_repeat.traced_once(wrapped.model, kinds):
        program, shapes = trace(wrapped, args, shapes)
    step("converting to ONNX")
    try:
        with _quiet():
            model, how = onnx_convert.convert(program, wrapped.input_names, wrapped.output_names, shapes)
    except Exception as e:
        raise BuildError(f"the ONNX conversion failed: {_first_line(e)}") from e
    return model, shapes, how


def reference(wrapped: Positional, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """torch's outputs on `inputs` (float32 numpy), for `compare`."""
    with torch.no_grad():
        return [w.float().numpy() for w in wrapped(*(inputs[n] for n in wrapped.input_names))]


def session(path: str, check: bool = False) -> ort.InferenceSession:
    """An onnxruntime CPU session of `path`. With `check` (the build's comparison), basic graph optimisations only:
    the check is of the exported graph, not of onnxruntime's fusions, and the session starts 2.3x sooner (1.3 s
    instead of 3.0 s for nanoVLM original_small)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if check:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def compare(path: str, names: Sequence[str], inputs: dict[str, np.ndarray], want: Sequence[np.ndarray]
            ) -> dict[str, float]:
    """Run model.onnx in onnxruntime on `inputs`: the largest |difference| from torch's outputs `want` per output
    `names`; BuildError when an output is off by more than ATOL + RTOL |torch|."""
    sess = session(path, check=True)
    got = sess.run(list(names), {i.name: np.asarray(inputs[i.name]) for i in sess.get_inputs()})
    out = {}
    for name, g, w in zip(names, got, want):
        if g.shape != w.shape:
            raise BuildError(f"ONNX output {name} has shape {g.shape}, torch {w.shape}")
        out[name] = float(np.max(np.abs(g - w))) if w.size else 0.0
        if not np.allclose(g, w, atol=ATOL, rtol=RTOL):
            raise BuildError(f"ONNX output {name} differs from torch by up to {out[name]:.3g} "
                             f"(allowed {ATOL} + {RTOL} x |torch|)")
    return out


def torch_model(compiled, seed: int = 0, weights_from=None, key_map=()):
    """The torch model to export: weights initialised from `seed`, or read from the checkpoint `weights_from`
    (through `key_map`, strictly) into a model built without storage."""
    if weights_from is None:
        return runtime_torch.build(compiled, seed=seed).eval()
    model = runtime_torch.build(compiled, init=False, device="meta")
    runtime_torch.load_checkpoint(model, weights_from, key_map)
    return model.eval()


def write(compiled, out_dir: str | os.PathLike, weights: bool = False, seed: int = 0,
          weights_from: str | os.PathLike | None = None, key_map=(), trace_once: bool = True) -> list[str]:
    """Write model.onnx (+ model.onnx.data when large), report.json, onnx.json (and model.safetensors).
    `trace_once`: trace each kind of repeated layer once (compiler/emit/onnx_repeat.py); False traces every copy."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    compiled.raise_for_errors()
    graph = compiled.graph
    path = os.path.join(out_dir, "model.onnx")
    with steps("building the torch model") as step:       # a spinner on a terminal, lines in a log
        model = torch_model(compiled, seed, weights_from, key_map)
        wrapped = Positional(model).eval()
        n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        trace_env, check_env = sizes(compiled, EXPORT_SIZES), sizes(compiled, CHECK_SIZES)
        example, dyn = example_inputs(graph, trace_env, seed), dynamic_shapes(graph, compiled)
        kinds = onnx_repeat.repeated(graph, model) if trace_once else []
        repeat: dict[str, Any] = {"traced_once": {names[0]: len(names) for names in kinds}}
        try:
            proto, shapes, how = export(wrapped, example, dyn, step, kinds)
        except BuildError as e:
            if not kinds:
                raise
            repeat = {"traced_once": {}, "traced_once_failed": str(e)}    # every copy traced, as without it
            proto, shapes, how = export(wrapped, example, dyn, step)
        kept = dim_ranges(graph, shapes)
        check_env = within(check_env, trace_env, kept)
        step("optimising the ONNX graph")
        onnx_convert.optimise(proto)
        step("writing model.onnx")
        external = n_bytes > EXTERNAL_DATA_BYTES
        onnx_convert.save(proto, path, external)
        info = _interface(proto)
        del proto                                           # it holds torch's tensors
        if weights:
            step("writing model.safetensors")
            save_weights(model, os.path.join(out_dir, "model.safetensors"))
        step("checking (onnx.checker)")
        onnx.checker.check_model(path, full_check=True)
        check_inputs = example_inputs(graph, check_env, seed + 1)
        want = reference(wrapped, check_inputs)
        names = wrapped.output_names
        del model, wrapped                                  # torch's weights go before onnxruntime loads its own
        gc.collect()
        at = ", ".join(f"{DIM_NAMES[sym]} {check_env[sym]}" for sym in DIM_NAMES if DIM_NAMES[sym] in kept)
        step(f"comparing with torch in onnxruntime ({at})")
        diffs = compare(path, names, {k: v.numpy() for k, v in check_inputs.items()}, want)
    info.update({
        "trace_sizes": trace_env, "check_sizes": check_env, "dims": kept, "max_abs_difference": diffs,
        "tolerance": {"atol": ATOL, "rtol": RTOL}, "seed": seed, "external_data": external, "conversion": how,
        **repeat,
        **({"weights_from": os.path.abspath(weights_from)} if weights_from is not None else {}),
    })
    for name, text in (("report.json", json.dumps(compiled.report, sort_keys=True, indent=2)),
                       ("onnx.json", json.dumps(info, sort_keys=True, indent=2))):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir))


def _interface(model) -> dict[str, Any]:
    """Inputs and outputs with their dimensions (names of the dynamic ones), and the opset, of an onnx_ir.Model."""
    def dims(v):
        return [d if isinstance(d, int) else str(d) for d in v.shape]
    return {"inputs": {v.name: dims(v) for v in model.graph.inputs},
            "outputs": {v.name: dims(v) for v in model.graph.outputs},
            "opset": model.opset_imports.get("", None)}


def within(check: dict[str, int], trace: dict[str, int], kept: dict[str, Any]) -> dict[str, int]:
    """The comparison's sizes inside what the export kept: a fixed dimension at its constant, the others in their
    range and, where the range allows, different from the traced size."""
    out = dict(check)
    for sym, name in DIM_NAMES.items():
        k = kept.get(name)
        if isinstance(k, int):
            out[sym] = k
        elif k:
            lo, hi = k["min"], k["max"] or max(out[sym], trace[sym]) + 1
            v = min(max(out[sym], lo), hi)
            out[sym] = v if v != trace[sym] else next((x for x in (v + 1, v - 1) if lo <= x <= hi), v)
    return out
