"""compile() = read -> override -> validate -> lower (wiring + shapes) -> account. One named line per pass."""
from __future__ import annotations

import copy
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from pydantic import ValidationError

from .diagnostics import ERROR, Diagnostic, Diagnostics, SpecError
from .ir import Graph, in_scope
from .lower import lower
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

    def to_torch(self, device: Any = None, dtype: Any = None, seed: int = 0, init: bool = True):
        """The model as a `runtime_torch.OmnicModel` (an `nn.Module`; imports torch only now).

        device: where to allocate (`"cpu"`, `"cuda"`, `"meta"` for shapes without memory); default torch's.
        dtype: floating tensors' dtype (`"float32"`, `"bfloat16"`, a `torch.dtype`); default float32.
        seed: weights drawn from it (the same values as `to_mlx(seed=...)`); init=False leaves them unset (load a
        checkpoint next: `runtime_torch.load_weights(model, path)`).
        Call it with one keyword per model input: `model(input_ids=ids)` -> {output name: tensor}; inputs are
        checked against the spec's (shape, dtype, placeholders). Raises SpecError on an invalid spec.
        """
        return self.build_with("torch", device=device, dtype=dtype, seed=seed, init=init)

    def to_mlx(self, dtype: Any = None, seed: int = 0, init: bool = True):
        """The model as a `runtime_mlx.OmnicModel` (an `mlx.nn.Module`; imports mlx only now).

        dtype: floating tensors' dtype (`"float32"`, `"bfloat16"`, an `mx.Dtype`); default float32.
        seed: weights drawn from it (the same values as `to_torch(seed=...)`); init=False leaves them unset (load a
        checkpoint next: `runtime_mlx.load_weights(model, path)`, which reads torch-layout safetensors).
        Call it with one keyword per model input: `model(input_ids=ids)` -> {output name: mx.array} (lazy until
        `mx.eval`); inputs are checked against the spec's. Raises SpecError on an invalid spec.
        """
        return self.build_with("mlx", dtype=dtype, seed=seed, init=init)

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

_SEG = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def apply_overrides(data: Any, overrides: dict[str, Any], diag: Diagnostics) -> Any:
    """Set values by path: `layers[4].params.num_experts`, `context`, or `<layer id>.<param>` (into its params)."""
    if not overrides:
        return data
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        segs: list = [int(m.group(2)) if m.group(2) else m.group(1) for m in _SEG.finditer(key)]
        if not segs or not isinstance(data, dict):
            diag.error((), f"override {key!r}: empty or unusable path", code="override")
            continue
        if segs[0] not in data and isinstance(data.get("layers"), list):
            # a layer id, which may itself be dotted (`decoder.blocks`): the longest prefix of the key that names a
            # layer, then `<param>` or `params.<param>` (or a layer key: repeat, frozen, inputs, type, include)
            ids = {l.get("id"): i for i, l in enumerate(data["layers"]) if isinstance(l, dict)
                   and isinstance(l.get("id"), str)}
            idx = n = None
            for n in range(len(segs), 0, -1):
                if all(isinstance(s, str) for s in segs[:n]) and ".".join(segs[:n]) in ids:
                    idx = ids[".".join(segs[:n])]
                    break
            if idx is None:
                from .diagnostics import did_you_mean
                head = key.split("[")[0].split("=")[0]
                near = [i for i in ids if head.startswith(i.split(".")[0] + ".") or i.startswith(segs[0] + ".")]
                diag.error((), f"override {key!r}: no top-level key or layer id is a prefix of it",
                           did_you_mean(".".join(s for s in segs[:2] if isinstance(s, str)), list(ids))
                           or ("layer ids starting so: " + ", ".join(near[:8]) if near else
                               "layer ids: " + ", ".join(list(ids)[:12]) if ids else "the spec's layers have no ids"),
                           code="override")
                continue
            rest = segs[n:]
            layer = data["layers"][idx]
            in_params = isinstance(layer.get("params"), dict) and rest and rest[0] in layer["params"]
            if rest and rest[0] != "params" and (rest[0] not in ("repeat", "frozen", "inputs", "type", "include")
                                                 or rest[0] not in layer and in_params):   # the seed's params.repeat
                rest = ["params"] + rest
            segs = ["layers", idx] + rest
        cur = data
        ok = True
        for s in segs[:-1]:
            if isinstance(cur, dict):
                cur = cur.setdefault(s, {}) if not isinstance(s, int) else None
            elif isinstance(cur, list) and isinstance(s, int) and 0 <= s < len(cur):
                cur = cur[s]
            else:
                cur = None
            if cur is None:
                ok = False
                break
        last = segs[-1]
        if not ok or (isinstance(cur, list) and not (isinstance(last, int) and 0 <= last < len(cur))) or \
                not isinstance(cur, (dict, list)):
            diag.error((), f"override {key!r}: path does not exist in the spec", code="override")
            continue
        cur[last] = value
    return data


def compile(spec: Union[str, os.PathLike, dict], overrides: Optional[dict[str, Any]] = None, *,
            batch: Optional[int] = None, context: Optional[int] = None, frames: Optional[int] = None,
            format: Optional[str] = None, recompute: bool = False, with_nodes: bool = False,
            budget: Optional[dict] = None, devices: Optional[int] = None, strategy: Optional[str] = None,
            grad_accum: Optional[int] = None) -> Compiled:
    """Compile a spec (path, JSON text or dict). Never raises for a bad spec: see `Compiled.diagnostics`. Raises
    ValueError for a bad keyword argument (batch, context, frames, devices, grad_accum: positive integers, as the
    CLI's options; strategy: see compiler/parallel.py). `devices` / `strategy` / `grad_accum` (or the same keys of
    the spec's budget) add per-device training figures (report: memory.training.<stage>.parallel)."""
    for name, v in (("batch", batch), ("context", context), ("frames", frames), ("devices", devices),
                    ("grad_accum", grad_accum)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"compile(): {name} must be a positive integer, got {v!r}")
    try:
        src = load_source(spec)
    except SpecError as e:
        return Compiled(None, None, None, e.diagnostics)
    diag = Diagnostics(src.file, src.locate)
    try:
        data = apply_overrides(src.data, overrides or {}, diag)
        if not isinstance(data, dict):
            diag.error((), "a spec must be a JSON object with 'name' and 'layers'", code="type")
            raise SpecError(diag.items)
        if "layers" not in data and ("model_type" in data or "architectures" in data):
            diag.error(("model_type",) if "model_type" in data else ("architectures",),
                       "this is a transformers config.json, not an omnic spec",
                       f"write a spec from it: omnic import-hf {src.file or 'config.json'} -o spec.json",
                       code="hf-config")
            raise SpecError(diag.items)
        try:
            doc = SpecDoc.model_validate(data)
        except ValidationError as e:
            report_validation(e, (), diag, SpecDoc)
            raise SpecError(diag.items)
        graph = lower(doc, src, diag)
    except SpecError:
        return Compiled(None, None, None, Diagnostics(src.file, src.locate, diag.items).sorted(), src)
    # an erroneous graph is still accounted, as far as it goes: nodes that could not be wired or resolved count
    # the weights their params fix and nothing else; the report says `partial` and names them
    partial = diag.has_errors
    b = doc.budget
    settings = {
        "batch": batch or (b.batch if b and b.batch else doc.batch),
        "context": context or (b.context if b and b.context else doc.context),
        "frames": frames or doc.frames,
        "format": format or (b.format if b else "bf16"),
        "recompute": recompute,
    }
    from .formats import get_format
    try:
        settings["format"] = get_format(settings["format"]).name
    except KeyError:
        from .formats import suggest
        diag.error(("budget", "format"), f"unknown storage format {settings['format']!r}", suggest(settings["format"]))
        return Compiled(doc, graph, None, diag.sorted(), src, settings)
    # the budget in force: the spec's, with the caller's keys over it; options without a limit set no budget
    n_diags = len(diag.items)
    eff = {**(b.model_dump() if b else {}), **(budget or {})}
    if eff.get("vram") is None:
        eff = {}
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
    layout, accum = _layout(eff or {**(b.model_dump() if b else {}), **(budget or {})}, devices, strategy,
                            grad_accum, diag)
    if layout is not None and eff:
        from_spec = devices is None and strategy is None     # the spec's budget names the layout itself
        explicit = {**({"mode": b.mode} if from_spec and b and "mode" in b.model_fields_set else {}), **(budget or {})}
        if explicit.get("mode") == "inference":
            diag.error(("budget", "mode"), "a per-device budget (devices / strategy) limits training memory",
                       "set mode to training, or drop devices and strategy")
        eff["mode"] = "training"
    if len(diag.items) > n_diags:
        return Compiled(doc, graph, None, diag.sorted(), src, settings)
    for key, e in (doc.expect or {}).items():
        if e.scope:
            if not key.startswith("params."):
                diag.error(("expect", key, "scope"), f"scope applies to params.* figures, not {key}")
            for k, i in enumerate(e.scope):
                if not any(in_scope(n.name, [i]) for n in graph.nodes()):
                    diag.error(("expect", key, "scope", k), f"scope names no layer: {i!r}")
    if diag.has_errors and not partial:
        return Compiled(doc, graph, None, diag.sorted(), src, settings)
    try:
        report = account(graph, doc, with_nodes=with_nodes, fmt=settings["format"], batch=settings["batch"],
                         context=settings["context"], frames=settings["frames"], recompute=recompute,
                         layout=layout, grad_accum=accum)
    except Exception:          # noqa: BLE001 - a partial graph may defeat a rule; the diagnostics say why
        if not partial:
            raise
        return Compiled(doc, graph, None, diag.sorted(), src, settings)
    if layout is not None:
        par = report["memory"]["training"][stage or "all"]["parallel"]
        if "error" in par:      # an impossible layout for the stage in force: refused before anything launches
            diag.error(("budget", "strategy") if b and b.strategy else (), par["error"], par["hint"] or None,
                       code="layout")
            return Compiled(doc, graph, None, diag.sorted(), src, settings)
    if partial:
        report["partial"] = True
        report["unaccounted"] = [n.name for n in graph.nodes() if n.op != "Input" and not n.outputs]
    if budget:
        report["budget"] = check_budget(report, doc, eff) if eff else None
    elif layout is not None and eff:
        report["budget"] = check_budget(report, doc, eff)
    if report["params"]["total"] > MAX_PARAMS:
        diag.error(("layers",), f"the model has {report['params']['total']:.3g} parameters; the limit is "
                                f"{MAX_PARAMS:.0e}", "a dimension is probably mistyped (an extra zero?)", code="limit")
    mem = report["memory"]["inference"].get(settings["format"], 0)
    if mem > MAX_MEMORY:
        approx = f"{mem:.3g}" if mem < 1e300 else f"10^{len(str(int(mem))) - 1}"    # :g of a huge int overflows
        diag.error(("layers",), f"inference needs {approx} bytes; the limit is {MAX_MEMORY:.3g}",
                   "a size is probably mistyped (a grid, a range, the batch or the context)", code="limit")
    return Compiled(doc, graph, report, diag.sorted(), src, settings)


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
