"""The JSON Schema of a spec, generated from the pydantic models (`SpecDoc`) and every op's `Params`.

Editors use it for completion and inline errors (`"$schema": "schema.json"` in a spec); `omnic schema` prints it
and `specs/schema.json` is its committed copy (tests/test_schema.py keeps the two equal). The schema can only say
what a JSON validator can check: keys, types, ranges, enums. Wiring, shapes and includes are the compiler's job.

Layers: an array of objects whose `type` selects the op. For each op an `if {type: X} then {params: X's schema}`
clause applies that op's params schema (field descriptions come from `Field(description=...)`). Kinds spelled
through a parent type (`{"type": "TransformerBlock", "params": {"type": "GQA_MoE_Layer", ...}}`) get a clause of
their own keyed on both `type` and `params.type`. A layer with `include` takes its type and params from a component
file and may override any subset, so its params are checked without the op's required keys.

Component files (`specs/components/*.json`, layer presets) are described by `$defs/Component`.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from pydantic.json_schema import models_json_schema

from . import registry
from .spec import LAYER_KEYS, MAX_REPEAT, SpecDoc

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_LAYER_KEY_SCHEMAS: dict[str, dict] = {
    "id": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", "maxLength": 200},
    "inputs": {"type": "array", "items": {"type": "string"}},
    "frozen": {"type": "boolean"},
    "include": {"type": "string"},
    "repeat": {"type": "integer", "minimum": 1, "maximum": MAX_REPEAT},
    "note": {"type": "string"},
}
_LAYER_KEY_DOCS = {
    "type": "Layer type (op name), or a parent type such as TransformerBlock with the kind in params.type.",
    "params": "The op's parameters (see the op's schema in $defs).",
    "id": "Name for wiring and weights: letters, digits and '_', dot-separated (e.g. 'vision', 'lm.head').",
    "inputs": "Ids (or id.output) this layer consumes; absent: wired by inference to the most recent fitting "
              "stream (reported as a warning).",
    "frozen": "Not trained (counted in params.frozen; weights kept in the budget format when training).",
    "include": "Relative path of a component file (a layer preset) giving type and params; keys here override it.",
    "repeat": "Stack this layer N times (nodes id.0 ... id.N-1, collapsed in `omnic summary`).",
    "note": "Free text for people.",
}
assert set(_LAYER_KEY_DOCS) == set(LAYER_KEYS), "schema.py and spec.LAYER_KEYS disagree on the layer keys"


def _op_params(ops: dict[str, type[registry.Op]]) -> tuple[dict[str, str], dict[str, Any]]:
    """One $defs entry per op's Params model (shared models once); returns (op name -> def name, $defs)."""
    models = {op.Params for op in ops.values()}
    keyed = [(m, "validation") for m in sorted(models, key=lambda m: (m.__name__, m.__module__))]
    refs, top = models_json_schema(keyed, ref_template="#/$defs/{model}")
    defs = top.get("$defs", {})
    names = {}
    for name, op in ops.items():
        ref = refs[(op.Params, "validation")]["$ref"]
        names[name] = ref.rsplit("/", 1)[1]
    return names, defs


def _clause(cond: dict, ref: str, required: list[str]) -> dict:
    """if `cond` then params follow `ref`; the op's required keys only when the layer has no include."""
    params = {"$ref": ref}
    full = {"properties": {"params": params}}
    if required:
        full = {"properties": {"params": {**params, "required": required}}, "required": ["params"]}
    return {"if": cond, "then": {"if": {"required": ["include"]},
                                 "then": {"properties": {"params": params}},
                                 "else": full}}


def build_schema() -> dict[str, Any]:
    ops = {n: op for n, op in registry.all_ops().items() if n != "Input"}
    names, op_defs = _op_params(ops)

    doc = SpecDoc.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs: dict[str, Any] = dict(doc.pop("$defs", {}))
    for k, v in op_defs.items():
        if k in defs and defs[k] != v:
            raise ValueError(f"schema: two models named {k}")
        defs[k] = v

    # kinds through a parent: a kind op's params model must admit `type`, and `additionalProperties: false` of the
    # referenced model would refuse it, so each kind gets a copy of its model's schema with `type` added.
    parents: dict[str, list[str]] = {}
    for n, op in ops.items():
        if op.kind_of:
            parents.setdefault(op.kind_of, []).append(n)
    kind_defs = {}
    for parent, kinds in parents.items():
        for k in kinds:
            d = copy.deepcopy(defs[names[k]])
            d["properties"] = {"type": {"const": k, "description": f"Kind of {parent}."}, **d["properties"]}
            d.pop("required", None)
            d["description"] = f"{parent} of kind {k}: {ops[k].doc}".strip()
            kind_defs[f"{parent}.{k}"] = d
    defs.update(kind_defs)

    # required keys are applied per layer (not with include), so the op defs themselves require nothing
    required = {n: defs[names[n]].get("required", []) for n in ops}
    for n, op in ops.items():
        d = defs[names[n]]
        d.pop("required", None)
        if op.doc and "description" not in d:
            d["description"] = op.doc

    type_names = sorted(set(ops) | set(parents))
    layer_props: dict[str, Any] = {
        "type": {"enum": type_names, "description": _LAYER_KEY_DOCS["type"]},
        "params": {"type": "object", "description": _LAYER_KEY_DOCS["params"]},
    }
    for k, s in _LAYER_KEY_SCHEMAS.items():
        layer_props[k] = {**s, "description": _LAYER_KEY_DOCS[k]}

    clauses = []
    for n, op in ops.items():
        cond: dict = {"properties": {"type": {"const": n}}, "required": ["type"]}
        if n in parents:  # the parent itself, used without params.type
            cond["properties"]["params"] = {"not": {"required": ["type"]}}
        ref = f"#/$defs/{names[n]}"
        clauses.append(_clause(cond, ref, required[n]))
    for parent, kinds in sorted(parents.items()):
        for k in sorted(kinds):
            cond = {"properties": {"type": {"const": parent}, "params": {"properties": {"type": {"const": k}},
                                                                           "required": ["type"]}},
                    "required": ["type", "params"]}
            ref = f"#/$defs/{parent}.{k}"
            clauses.append(_clause(cond, ref, required[k]))
        # an unknown kind: params.type must be one of the kinds
        clauses.append({"if": {"properties": {"type": {"const": parent}, "params": {"required": ["type"]}},
                               "required": ["type", "params"]},
                        "then": {"properties": {"params": {"properties": {"type": {"enum": sorted(kinds)}}}}}})

    defs["Layer"] = {
        "type": "object",
        "description": "One layer: an op with its params, or an include of a component file.",
        "properties": layer_props,
        "additionalProperties": False,
        "anyOf": [{"required": ["type"]}, {"required": ["include"]}],
        "allOf": clauses,
    }
    defs["Component"] = {
        "type": "object",
        "description": "A component file (layer preset) for `include`: a type and (some of) its params, or a "
                       "further include.",
        "properties": {"$schema": {"type": "string"}, "name": {"type": "string"}, "note": {"type": "string"},
                       "type": layer_props["type"], "params": layer_props["params"],
                       "include": layer_props["include"]},
        "additionalProperties": False,
        "anyOf": [{"required": ["type"]}, {"required": ["include"]}],
        "allOf": [{"if": c["if"], "then": c["then"]["then"]} if "else" in c.get("then", {}) else c
                  for c in clauses],
    }

    doc["properties"]["layers"] = {**doc["properties"]["layers"], "type": "array", "items": {"$ref": "#/$defs/Layer"}}
    out = {"$schema": DIALECT, "title": "omnic spec",
           "description": (SpecDoc.__doc__ or "").strip(), **{k: v for k, v in doc.items() if k != "title"}}
    out["$defs"] = dict(sorted(defs.items()))
    return out


def schema_text() -> str:
    """The schema as committed in specs/schema.json (stable key order, trailing newline)."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"
