"""compile(): a short straight line of named passes, each a function that can be called alone (tinygrad's codegen,
torch.fx's pass manager): parse -> override -> validate -> lower (wiring + shapes) -> settings -> budget -> account
-> checks. `Compiled` is what it returns: the document, the graph, the report and every diagnostic."""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .diagnostics import ERROR, Diagnostic, Diagnostics, SpecError
from .ir import Graph, in_scope
from .lower import lower
from .overrides import apply_overrides
from .report import account, check_budget
from .source import Source, parse_text, read_file
from .spec import SpecDoc, parse_size, report_validation


@dataclass
class Compiled:
    """The result of `compile()`: the document, the graph, the report and every diagnostic."""

    doc: Optional[SpecDoc]
    graph: Optional[Graph]
    report: Optional[dict]
    diagnostics: list[Diagnostic]
    source: Optional[Source] = None
    settings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.severity == ERROR for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == ERROR]

    def raise_for_errors(self) -> "Compiled":
        if not self.ok:
            raise SpecError(self.errors)
        return self

    def to_torch(self, device: Any = None, dtype: Any = None, seed: int = 0, init: bool = True,
                 weights: Optional[Union[str, os.PathLike]] = None):
        """The model as a `runtime_torch.OmnicModel` (an `nn.Module`; imports torch only now).

        device: where to allocate (`"cpu"`, `"cuda"`, `"meta"` for shapes without memory); default torch's.
        dtype: floating tensors' dtype (`"float32"`, `"bfloat16"`, a `torch.dtype`); default float32.
        seed: weights drawn from it (the same values as `to_mlx(seed=...)`); init=False leaves them unset (load a
        checkpoint next: `runtime_torch.load_weights(model, path)`).
        weights: a safetensors file with the model's names (what `save_weights` writes) to load instead, strictly,
        cast to `dtype`: each tensor is read once into its final storage (the model is built on the meta device).
        Call it with one keyword per model input: `model(input_ids=ids)` -> {output name: tensor}; inputs are
        checked against the spec's (shape, dtype, placeholders). Raises SpecError on an invalid spec.
        """
        return self.build_with("torch", device=device, dtype=dtype, seed=seed, init=init, weights=weights)

    def to_mlx(self, dtype: Any = None, seed: int = 0, init: bool = True,
               weights: Optional[Union[str, os.PathLike]] = None):
        """The model as a `runtime_mlx.OmnicModel` (an `mlx.nn.Module`; imports mlx only now).

        dtype: floating tensors' dtype (`"float32"`, `"bfloat16"`, an `mx.Dtype`); default float32.
        seed: weights drawn from it (the same values as `to_torch(seed=...)`); init=False leaves them unset (load a
        checkpoint next: `runtime_mlx.load_weights(model, path)`, which reads torch-layout safetensors).
        weights: a safetensors file (torch layout, the model's names) to load instead, strictly, cast to `dtype`.
        Call it with one keyword per model input: `model(input_ids=ids)` -> {output name: mx.array} (lazy until
        `mx.eval`); inputs are checked against the spec's. Raises SpecError on an invalid spec.
        """
        return self.build_with("mlx", dtype=dtype, seed=seed, init=init, weights=weights)

    def build_with(self, runtime: str, **kw):
        """The model of the runtime named `runtime` (RUNTIMES). The compiler imports no runtime: the runtime module
        is looked up by name when a model is asked for, so runtimes depend on the compiler and never the reverse."""
        return importlib.import_module(RUNTIMES[runtime]).build(self.raise_for_errors(), **kw)


#: runtime name -> the module whose `build(compiled, **kw)` makes its model
RUNTIMES = {"torch": "runtime_torch", "mlx": "runtime_mlx"}


def load_source(spec: Union[str, os.PathLike, dict]) -> Source:
    if isinstance(spec, dict):
        try:
            text = json.dumps(spec, indent=1, allow_nan=False)
        except (ValueError, TypeError, RecursionError) as e:    # NaN, a non-JSON value, nesting past the stack
            raise SpecError([Diagnostic(ERROR, f"the spec dict is not JSON: {e}", "", None, None, None,
                                        "use only dicts, lists, strings, finite numbers, booleans and None",
                                        "json")]) from None
        return parse_text(text, None)
    if isinstance(spec, os.PathLike):
        return read_file(os.fspath(spec))
    if isinstance(spec, str):
        if spec.lstrip().startswith("{"):
            return parse_text(spec, "<string>")
        return read_file(spec)
    raise TypeError(f"compile() takes a path, a JSON string or a dict, not {type(spec).__name__}")


MAX_PARAMS = 10**14        # 100T: far beyond any model; larger totals are typos
MAX_MEMORY = 2**80         # bytes at inference (a yobibyte): also what a runaway size (a grid, a range) implies


def compile(spec: Union[str, os.PathLike, dict], overrides: Optional[dict[str, Any]] = None, *,
            batch: Optional[int] = None, context: Optional[int] = None, frames: Optional[int] = None,
            format: Optional[str] = None, recompute: bool = False, with_nodes: bool = False,
            budget: Optional[dict] = None, devices: Optional[int] = None, strategy: Optional[str] = None,
            grad_accum: Optional[int] = None) -> Compiled:
    """Compile a spec (path, JSON text or dict). Never raises for a bad spec: see `Compiled.diagnostics`. Raises
    ValueError for a bad keyword argument (batch, context, frames, devices, grad_accum: positive integers, as the
    CLI's options; strategy: see compiler/parallel.py). `devices` / `strategy` / `grad_accum` (or the same keys of
    the spec's budget) add per-device training figures (report: memory.training.<stage>.parallel).

    The passes, in order, each a function of this module (or the one named) that can be called alone:
    parse (`load_source`) -> override (`overrides.apply_overrides`) -> validate -> lower (`lower.lower`: wiring
    and shapes) -> settings -> budget -> check_expect_scopes -> account (`report.account`) -> check_layout ->
    annotate -> check_limits. A pass records its errors in `diag`; compile() stops after the first pass that
    leaves one it cannot go on from (an erroneous graph is still accounted, as far as it goes: `partial`)."""
    check_arguments(batch=batch, context=context, frames=frames, devices=devices, grad_accum=grad_accum)
    try:
        src = load_source(spec)
    except SpecError as e:
        return Compiled(None, None, None, e.diagnostics)
    diag = Diagnostics(src.file, src.locate)
    try:
        doc = validate(apply_overrides(src.data, overrides or {}, diag), src, diag)
        graph = lower(doc, src, diag)
    except SpecError:
        return Compiled(None, None, None, Diagnostics(src.file, src.locate, diag.items).sorted(), src)
    partial = diag.has_errors
    n_diags = len(diag.items)
    stop = lambda s: Compiled(doc, graph, None, diag.sorted(), src, s)          # noqa: E731
    settings = resolve_settings(doc, diag, batch=batch, context=context, frames=frames, format=format,
                                recompute=recompute)
    if len(diag.items) > n_diags:
        return stop(settings)
    plan = resolve_budget(doc, diag, budget=budget, devices=devices, strategy=strategy, grad_accum=grad_accum)
    if len(diag.items) > n_diags:
        return stop(settings)
    check_expect_scopes(doc, graph, diag)
    if diag.has_errors and not partial:
        return stop(settings)
    try:
        report = account(graph, doc, with_nodes=with_nodes, fmt=settings["format"], batch=settings["batch"],
                         context=settings["context"], frames=settings["frames"], recompute=recompute,
                         layout=plan.layout, grad_accum=plan.grad_accum)
    except Exception:          # noqa: BLE001 - a partial graph may defeat a rule; the diagnostics say why
        if not partial:
            raise
        return stop(settings)
    if not check_layout(report, doc, plan, diag):
        return stop(settings)
    annotate(report, doc, graph, plan, partial, budget)
    check_limits(report, settings, diag)
    return Compiled(doc, graph, report, diag.sorted(), src, settings)


# --- the passes after parsing ----------------------------------------------------------------------------------------
def check_arguments(**kw: Optional[int]) -> None:
    """Keyword arguments that must be positive integers when given (a ValueError, as the CLI's options)."""
    for name, v in kw.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"compile(): {name} must be a positive integer, got {v!r}")


def validate(data: Any, src: Source, diag: Diagnostics) -> SpecDoc:
    """The typed document of parsed JSON (pydantic, strict); raises SpecError with the located errors."""
    if not isinstance(data, dict):
        diag.error((), "a spec must be a JSON object with 'name' and 'layers'", code="type")
        raise SpecError(diag.items)
    if "layers" not in data and ("model_type" in data or "architectures" in data):
        diag.error(("model_type",) if "model_type" in data else ("architectures",),
                   "this is a transformers config.json, not an omnic spec",
                   f"write a spec from it: omnic import-hf {src.file or 'config.json'} -o spec.json",
                   code="hf-config")
        raise SpecError(diag.items)
    from pydantic import ValidationError
    try:
        return SpecDoc.model_validate(data)
    except ValidationError as e:
        report_validation(e, (), diag, SpecDoc)
        raise SpecError(diag.items)


def resolve_settings(doc: SpecDoc, diag: Diagnostics, *, batch: Optional[int], context: Optional[int],
                     frames: Optional[int], format: Optional[str], recompute: bool) -> dict:
    """The sizes and storage format the figures are computed at: the arguments, else the budget's, else the
    spec's; an unknown format is an error at budget.format (the settings then hold the name as given)."""
    b = doc.budget
    settings = {
        "batch": batch or (b.batch if b and b.batch else doc.batch),
        "context": context or (b.context if b and b.context else doc.context),
        "frames": frames or doc.frames,
        "format": format or (b.format if b else "bf16"),
        "recompute": recompute,
    }
    from .formats import get_format, suggest
    try:
        settings["format"] = get_format(settings["format"]).name
    except KeyError:
        diag.error(("budget", "format"), f"unknown storage format {settings['format']!r}", suggest(settings["format"]))
    return settings


@dataclass(frozen=True)
class BudgetPlan:
    """The budget in force (the spec's keys, the caller's over them; {} when no limit is set), the device layout
    (None: one device) and the gradient accumulation steps."""
    limits: dict
    layout: Any
    grad_accum: int
    stage: Optional[str]


def resolve_budget(doc: SpecDoc, diag: Diagnostics, *, budget: Optional[dict], devices: Optional[int],
                   strategy: Optional[str], grad_accum: Optional[int]) -> BudgetPlan:
    """The budget in force and the device layout; errors at the budget's keys. Options without a limit set no
    budget; a per-device layout (devices / strategy) limits training memory."""
    from .formats import get_format
    b = doc.budget
    keys = {**(b.model_dump() if b else {}), **(budget or {})}
    eff = keys if keys.get("vram") is not None else {}
    stage = eff.get("stage")
    if stage is not None and stage not in (doc.stages or {}):
        diag.error(("budget", "stage"), f"unknown stage {stage!r}",
                   "stages: " + ", ".join(doc.stages) if doc.stages else "the spec declares no 'stages'")
    try:
        if eff:
            parse_size(eff["vram"])
            get_format(eff.get("format") or "bf16")
    except (KeyError, ValueError) as e:
        diag.error(("budget",), f"invalid budget: {e}", code="value")
    layout, accum = _layout(keys, devices, strategy, grad_accum, diag)
    if layout is not None and eff:
        from_spec = devices is None and strategy is None     # the spec's budget names the layout itself
        explicit = {**({"mode": b.mode} if from_spec and b and "mode" in b.model_fields_set else {}), **(budget or {})}
        if explicit.get("mode") == "inference":
            diag.error(("budget", "mode"), "a per-device budget (devices / strategy) limits training memory",
                       "set mode to training, or drop devices and strategy")
        eff["mode"] = "training"
    return BudgetPlan(eff, layout, accum, stage)


def _layout(keys: dict, devices: Optional[int], strategy: Optional[str], grad_accum: Optional[int],
            diag: Diagnostics):
    """(Layout or None, grad_accum): the arguments first, else the budget's keys; an impossible layout is an
    error at the budget's key (or, from an argument, a ValueError as for any bad keyword)."""
    from .parallel import LayoutError, parse_layout
    n = devices if devices is not None else keys.get("devices")
    st = strategy if strategy is not None else keys.get("strategy")
    accum = grad_accum or keys.get("grad_accum") or 1
    if n is None and st is None:
        return None, accum
    try:
        return parse_layout(st or "fsdp", n or 1), accum
    except LayoutError as e:
        if strategy is not None or devices is not None:
            raise ValueError(f"{e.message}" + (f" ({e.hint})" if e.hint else "")) from None
        diag.error(("budget", "strategy"), e.message, e.hint or None, code="layout")
        return None, accum


def check_expect_scopes(doc: SpecDoc, graph: Graph, diag: Diagnostics) -> None:
    """Each `expect` entry's scope applies to a params.* figure and names layers of the graph."""
    for key, e in (doc.expect or {}).items():
        if e.scope:
            if not key.startswith("params."):
                diag.error(("expect", key, "scope"), f"scope applies to params.* figures, not {key}")
            for k, i in enumerate(e.scope):
                if not any(in_scope(n.name, [i]) for n in graph.nodes()):
                    diag.error(("expect", key, "scope", k), f"scope names no layer: {i!r}")


def check_layout(report: dict, doc: SpecDoc, plan: BudgetPlan, diag: Diagnostics) -> bool:
    """A device layout that is impossible for the stage in force is an error, before anything launches; False
    then."""
    if plan.layout is None:
        return True
    par = report["memory"]["training"][plan.stage or "all"]["parallel"]
    if "error" in par:
        diag.error(("budget", "strategy") if doc.budget and doc.budget.strategy else (), par["error"],
                   par["hint"] or None, code="layout")
        return False
    return True


def annotate(report: dict, doc: SpecDoc, graph: Graph, plan: BudgetPlan, partial: bool,
             budget: Optional[dict]) -> None:
    """What the accounting alone does not say: a partial report names the nodes it could not wire; the budget's
    verdict when the caller gave one or a device layout is in force (the spec's own budget is checked by the CLI)."""
    if partial:
        report["partial"] = True
        report["unaccounted"] = [n.name for n in graph.nodes() if n.op != "Input" and not n.outputs]
    if budget:
        report["budget"] = check_budget(report, doc, plan.limits) if plan.limits else None
    elif plan.layout is not None and plan.limits:
        report["budget"] = check_budget(report, doc, plan.limits)


def check_limits(report: dict, settings: dict, diag: Diagnostics) -> None:
    """Totals past any real model (MAX_PARAMS, MAX_MEMORY) are errors: a dimension is probably mistyped."""
    if report["params"]["total"] > MAX_PARAMS:
        diag.error(("layers",), f"the model has {report['params']['total']:.3g} parameters; the limit is "
                                f"{MAX_PARAMS:.0e}", "a dimension is probably mistyped (an extra zero?)", code="limit")
    mem = report["memory"]["inference"].get(settings["format"], 0)
    if mem > MAX_MEMORY:
        approx = f"{mem:.3g}" if mem < 1e300 else f"10^{len(str(int(mem))) - 1}"    # :g of a huge int overflows
        diag.error(("layers",), f"inference needs {approx} bytes; the limit is {MAX_MEMORY:.3g}",
                   "a size is probably mistyped (a grid, a range, the batch or the context)", code="limit")
