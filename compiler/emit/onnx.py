"""`omnic build --target onnx`: a compiled model exported to ONNX through torch, checked, and compared.

`write(compiled, out_dir, weights=False, seed=0)` (called by `compiler.emit.build`, which makes `out_dir` fresh):
  1. builds the torch model (`runtime_torch.build`, weights initialised from `seed`, eval mode);
  2. traces it with `torch.export.export` (non-strict) on example inputs of batch 2 (EXPORT_SIZES: no dimension
     is 1, so none is frozen), every symbolic input dimension marked dynamic: B -> "batch", T -> "seq",
     F -> "frames" (T at most the spec's context, F at most its frames). Where the model's code narrows one (fVLM
     loops over frames in Python: frames stay the traced count), torch.export's suggested range or constant is
     taken and written to onnx.json "dims"; batch and length must stay dynamic. Then `torch.onnx.export(dynamo=True)`
     converts the program;
  3. saves model.onnx: inputs named as the model's inputs, outputs as the report's (`node` or `node.output`);
     weights over 2 GiB in model.onnx.data;
  4. runs `onnx.checker.check_model(full_check=True)`;
  5. runs model.onnx in onnxruntime on inputs of other sizes (CHECK_SIZES: batch 3, another length) and compares
     each output with torch's: |onnx - torch| <= ATOL + RTOL |torch|, else BuildError;
  6. writes report.json (the compiler's report) and onnx.json (names, dynamic dimensions, sizes and differences).
An ONNX graph holds its weights, so model.onnx always carries them (initialised from `seed`); `weights=True`
also writes them as model.safetensors (runtime_torch's names), for loading the same values into torch.
A progress display (rich, on stderr) names each step; it is off when stderr is not a terminal.
Source: https://pytorch.org/docs/stable/onnx_export.html (dynamic_shapes with torch.export.Dim).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import runtime_torch
from runtime_common import inputs
from runtime_common.progress import steps
from runtime_torch.weights import save_weights

from .build import BuildError

EXPORT_SIZES = {"B": 2, "T": 6, "F": 2}     # example inputs of the trace
CHECK_SIZES = {"B": 3, "T": 9, "F": 3}      # inputs of the comparison: other sizes than the trace's
DIM_NAMES = {"B": "batch", "T": "seq", "F": "frames"}
ATOL = RTOL = 1e-4
EXTERNAL_DATA_BYTES = 2 * 2**30 - 2**20     # protobuf's 2 GiB limit, with room for the graph


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


def export(wrapped: Positional, example: dict[str, torch.Tensor], shapes, step=lambda text: None):
    """trace(), then the ONNX conversion of the program: (ONNXProgram whose dynamic axes carry DIM_NAMES, the
    dynamic shapes used). Tracing is done here, not by torch.onnx.export, which would fall back silently to slower
    strategies when it fails."""
    args = tuple(example[n] for n in wrapped.input_names)
    step("tracing (torch.export, dynamic batch and length)")
    program, shapes = trace(wrapped, args, shapes)
    step("converting to ONNX (torch.onnx.export, dynamo)")
    try:
        with _quiet():
            return torch.onnx.export(program, args, dynamo=True, dynamic_shapes={"xs": shapes}, verbose=False,
                                     input_names=list(wrapped.input_names),
                                     output_names=list(wrapped.output_names), optimize=True), shapes
    except Exception as e:
        raise BuildError(f"the ONNX conversion failed: {_first_line(e)}") from e


def compare(path: str, wrapped: Positional, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Run model.onnx in onnxruntime and torch on `inputs`: the largest |difference| per output; BuildError when
    an output is off by more than ATOL + RTOL |torch|."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    got = session.run(list(wrapped.output_names), feed)
    with torch.no_grad():
        want = wrapped(*(inputs[n] for n in wrapped.input_names))
    out = {}
    for name, g, w in zip(wrapped.output_names, got, want):
        w = w.float().numpy()
        if g.shape != w.shape:
            raise BuildError(f"ONNX output {name} has shape {g.shape}, torch {w.shape}")
        out[name] = float(np.max(np.abs(g - w))) if w.size else 0.0
        if not np.allclose(g, w, atol=ATOL, rtol=RTOL):
            raise BuildError(f"ONNX output {name} differs from torch by up to {out[name]:.3g} "
                             f"(allowed {ATOL} + {RTOL} x |torch|)")
    return out


def write(compiled, out_dir: str | os.PathLike, weights: bool = False, seed: int = 0) -> list[str]:
    """Write model.onnx (+ model.onnx.data when large), report.json, onnx.json (and model.safetensors)."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    compiled.raise_for_errors()
    graph = compiled.graph
    path = os.path.join(out_dir, "model.onnx")
    with steps("building the torch model") as step:       # a spinner on a terminal, lines in a log
        model = runtime_torch.build(compiled, seed=seed).eval()
        wrapped = Positional(model).eval()
        n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        trace_env, check_env = sizes(compiled, EXPORT_SIZES), sizes(compiled, CHECK_SIZES)
        program, shapes = export(wrapped, example_inputs(graph, trace_env, seed), dynamic_shapes(graph, compiled),
                                 step)
        kept = dim_ranges(graph, shapes)
        check_env = within(check_env, trace_env, kept)
        step("writing model.onnx")
        external = n_bytes > EXTERNAL_DATA_BYTES
        program.save(path, external_data=external)
        step("checking (onnx.checker)")
        onnx.checker.check_model(path, full_check=True)
        at = ", ".join(f"{DIM_NAMES[sym]} {check_env[sym]}" for sym in DIM_NAMES if DIM_NAMES[sym] in kept)
        step(f"comparing with torch in onnxruntime ({at})")
        diffs = compare(path, wrapped, example_inputs(graph, check_env, seed + 1))
        proto = onnx.load(path, load_external_data=False)
        if weights:
            step("writing model.safetensors")
            save_weights(model, os.path.join(out_dir, "model.safetensors"))
    info = {
        "inputs": {i.name: _dims(i) for i in proto.graph.input},
        "outputs": {o.name: _dims(o) for o in proto.graph.output},
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "trace_sizes": trace_env, "check_sizes": check_env, "dims": kept, "max_abs_difference": diffs,
        "tolerance": {"atol": ATOL, "rtol": RTOL}, "seed": seed, "external_data": external,
    }
    for name, text in (("report.json", json.dumps(compiled.report, sort_keys=True, indent=2)),
                       ("onnx.json", json.dumps(info, sort_keys=True, indent=2))):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir))


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


def _dims(v) -> list:
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
