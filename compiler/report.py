"""The report: every figure the compiler computes, as a stable JSON-able dict (see docs/report-format.md).

Built from the graph by `account()`; the CLI renders it as tables, `--json` prints it as is.
"""
from __future__ import annotations

from typing import Any, Optional

from . import cost, parallel
from .formats import FORMATS, get_format
from .ir import Graph, in_scope
from .spec import EXPECT_KEYS, SpecDoc, parse_size

REPORT_VERSION = 1


def stage_trainable(g: Graph, doc: SpecDoc, stage: Optional[str]) -> set[str]:
    names = [n.name for n in g.nodes() if n.op != "Input"]
    base = {n.name for n in g.nodes() if n.op != "Input" and not n.frozen}
    if stage is None:
        return base
    st = doc.stages[stage]
    if st.train is not None:
        return {n for n in names if in_scope(n, st.train)}
    return {n for n in base if not in_scope(n, st.freeze or [])}


def account(g: Graph, doc: SpecDoc, *, batch: int, context: int, frames: int, fmt: str = "bf16",
            recompute: bool = False, with_nodes: bool = False, layout: Optional[parallel.Layout] = None,
            grad_accum: int = 1) -> dict[str, Any]:
    costs = cost.cost_nodes(g, batch, context, frames)
    by = {c.name: c for c in costs}
    total = sum(c.params for c in costs)
    active = sum(c.active for c in costs)
    trainable_set = stage_trainable(g, doc, None)
    trainable = sum(by[n].params for n in trainable_set)
    prefill = sum(c.flops_prefill for c in costs)
    decode = sum(c.flops_decode for c in costs)
    state_elems = sum(c.state for c in costs)

    census = cost.weight_census(costs)
    formats = dict(FORMATS)          # and the format in force when it is a variant (`mlx-4bit-g32`)
    for name in (fmt, doc.budget.format if doc.budget else None):
        if name:
            f = get_format(name)
            formats.setdefault(f.name, f)
    weights = {name: round(cost.weight_bytes(costs, f, census=census)) for name, f in formats.items()}
    peak = cost.activation_peak(g, costs)
    act = {name: peak * f.compute_bytes for name, f in formats.items()}
    state = {name: state_elems * f.compute_bytes for name, f in formats.items()}
    inference = {name: weights[name] + state[name] + act[name] for name in formats}

    def training(stage: Optional[str]) -> dict[str, Any]:
        tset = stage_trainable(g, doc, stage)
        n_train = sum(by[n].params for n in tset)
        frozen_names = {c.name for c in costs if c.name not in tset}
        frozen_w = round(cost.weight_bytes(costs, get_format(fmt), frozen_names))
        path = cost.grad_path(g, tset)
        acts = cost.training_activations(costs, path, 2, recompute)
        parts = {"trainable_params": n_train, "weights_grads_optimizer": n_train * cost.TRAIN_BYTES_PER_PARAM,
                 "frozen_weights": frozen_w, "activations": acts}
        parts["total"] = parts["weights_grads_optimizer"] + frozen_w + acts
        parts["flops_step"] = cost.training_flops(costs, tset, path)
        if layout is not None:        # per device; an `error` where the layout does not fit this stage
            us = parallel.units(g, costs, tset)
            try:
                parallel.check_layout(layout, us)
                acts_dev = cost.training_activations(costs, path, get_format(fmt).compute_bytes, recompute)
                parts["parallel"] = parallel.per_device(layout, us, get_format(fmt), acts_dev, grad_accum)
                parts["parallel"]["flops_step"] = parts["flops_step"] * grad_accum
            except parallel.LayoutError as e:
                parts["parallel"] = {**layout.to_json(), "error": e.message, "hint": e.hint}
        return parts

    train = {"all": training(None)}
    for st in (doc.stages or {}):
        train[st] = training(st)

    rep: dict[str, Any] = {
        "omnic_report": REPORT_VERSION,
        "name": doc.name,
        "settings": {"batch": batch, "context": context, "frames": frames, "format": fmt, "recompute": recompute,
                     **({"parallel": {**layout.to_json(), "grad_accum": grad_accum}} if layout else {})},
        "params": {"total": total, "trainable": trainable, "active": round(active), "frozen": total - trainable},
        "flops": {"prefill": prefill, "decode_per_token": decode, "train_step": train["all"]["flops_step"]},
        "memory": {
            "weights": weights,
            "decode_state": state,
            "activation_peak": act,
            "inference": inference,
            "training": train,
        },
        "inputs": {n.name: n.out.to_json() for n in g.nodes() if n.op == "Input" and n.outputs},
        "outputs": {f"{n}.{o}" if o != "out" else n: g[n].outputs[o].to_json() for n, o in g.outputs
                    if o in g[n].outputs},
        "inferred_edges": [{"from": u, "to": v, "output": o} for u, v, o in g.inferred_edges()],
        "conventions": cost.__doc__.split("Conventions (printed with every report):\n", 1)[1].strip(),
    }
    rep["expect"] = check_expectations(rep, doc, fmt, costs)
    rep["budget"] = check_budget(rep, doc)
    if with_nodes:
        rep["nodes"] = [{
            "name": c.name, "op": c.op, "group": c.group,
            "outputs": {k: t.to_json() for k, t in g[c.name].outputs.items()},
            "params": c.params, "active": round(c.active), "trainable": c.trainable,
            "flops_prefill": c.flops_prefill, "flops_decode": c.flops_decode,
            "state_elems": c.state, "out_elems": c.out_elems,
            "inputs": [{"from": s, "output": o, "inferred": inf} for (s, o), inf in zip(g[c.name].inputs,
                                                                                      g[c.name].inferred)],
            "tied_to": _tied_layer(g[c.name]),
        } for c in costs]
    return rep


def _tied_layer(node) -> "str | None":
    """The node whose weight a tied head shares (`lm.embed` for a head with tied_name `lm.embed.weight`)."""
    name = getattr(node.params, "tied_name", None)
    return name.rsplit(".", 1)[0] if name else None


def figure(rep: dict, key: str, fmt: str) -> float:
    if key.startswith("params."):
        return rep["params"][key.split(".")[1]]
    if key == "memory.inference":
        return rep["memory"]["inference"][fmt]
    if key == "memory.training":
        return rep["memory"]["training"]["all"]["total"]
    if key == "flops.prefill":
        return rep["flops"]["prefill"]
    if key == "flops.decode":
        return rep["flops"]["decode_per_token"]
    raise KeyError(key)


def scoped_params(costs, key: str, ids: list[str]) -> float:
    field = {"params.total": "params", "params.active": "active", "params.trainable": "trainable"}[key]
    return round(sum(getattr(c, field) for c in costs if in_scope(c.name, ids)))


def check_expectations(rep: dict, doc: SpecDoc, fmt: str, costs=None) -> list[dict]:
    out = []
    for key, e in (doc.expect or {}).items():
        claimed = parse_size(e.value)
        got = scoped_params(costs, key, e.scope) if e.scope and costs is not None else figure(rep, key, fmt)
        diff = (got - claimed) / claimed if claimed else float("inf")
        row = {"key": key, "claimed": claimed, "computed": got, "relative_difference": round(diff, 6),
               "tolerance": e.tolerance, "ok": abs(diff) <= e.tolerance, "meaning": EXPECT_KEYS[key]}
        if e.scope:
            row["scope"] = list(e.scope)
        out.append(row)
    return out


def check_budget(rep: dict, doc: SpecDoc, override: Optional[dict] = None) -> Optional[dict]:
    b = override or (doc.budget.model_dump() if doc.budget else None)
    if not b:
        return None
    limit = parse_size(b["vram"])
    fmt = get_format(b.get("format") or "bf16").name
    mode = b.get("mode") or "inference"
    if mode == "inference":
        fig = rep["memory"]["inference"][fmt]
        what = f"memory.inference[{fmt}] at batch {rep['settings']['batch']}, context {rep['settings']['context']}"
    else:
        stage = b.get("stage") or "all"
        par = rep["memory"]["training"][stage].get("parallel")
        if par and "per_device" in par:
            fig = par["per_device"]["total"]
            what = (f"memory.training[{stage}].per_device ({par['strategy']} on {par['devices']} devices; weights of "
                    f"frozen parts in {rep['settings']['format']})")
        else:
            fig = rep["memory"]["training"][stage]["total"]
            what = f"memory.training[{stage}] (weights of frozen parts in {rep['settings']['format']})"
    return {"limit": limit, "figure": fig, "what": what, "format": fmt, "mode": mode,
            "verdict": "pass" if fig <= limit else "fail", "headroom": limit - fig}
