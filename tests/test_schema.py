"""The committed JSON Schema (specs/schema.json) is the generated one, and every shipped spec validates against it.

The schema is generated from the pydantic models (compiler/schema.py); a spec the compiler accepts must not be
refused by an editor using the schema, and the schema must refuse what the compiler refuses at the key level.
"""
from __future__ import annotations

import json
import pathlib

import pytest

jsonschema = pytest.importorskip("jsonschema")

from compiler import registry
from compiler.schema import build_schema, schema_text

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SEED = ROOT / "scripts" / "seeds" / "omni-lite.json"    # the verbatim copy of the seed, kept in the repo


@pytest.fixture(scope="module")
def schema() -> dict:
    s = build_schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return s


def validator(schema: dict, component: bool = False):
    if component:  # component files (layer presets) are checked against $defs/Component
        schema = {**schema, "$ref": "#/$defs/Component", "properties": {}, "required": [],
                  "additionalProperties": True}
    return jsonschema.Draft202012Validator(schema)


def errors(schema: dict, doc, component: bool = False) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator(schema, component).iter_errors(doc)]


def test_committed_schema_is_current():
    committed = (SPECS / "schema.json").read_text(encoding="utf-8") if (SPECS / "schema.json").exists() else ""
    assert committed == schema_text(), (
        "specs/schema.json is out of date with the op registry / spec models; regenerate it with "
        "`omnic schema > specs/schema.json`")


def spec_files() -> list[pathlib.Path]:
    return sorted(p for p in SPECS.rglob("*.json") if p.name != "schema.json")


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: str(p.relative_to(SPECS)))
def test_shipped_specs_validate(schema, path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    component = "layers" not in doc
    assert errors(schema, doc, component) == []


def test_seed_validates(schema):
    doc = json.loads(SEED.read_text(encoding="utf-8"))
    ops = registry.all_ops()
    kinds = {op.kind_of for op in ops.values() if op.kind_of}
    missing = {l.get("params", {}).get("type", l["type"]) if l["type"] in kinds else l["type"] for l in doc["layers"]}
    missing = {t for t in missing if t not in ops and t not in kinds}
    if missing:
        pytest.skip(f"layer types not registered yet: {sorted(missing)}")
    assert errors(schema, doc) == []


def test_every_op_has_a_layer_clause(schema):
    types = set(schema["$defs"]["Layer"]["properties"]["type"]["enum"])
    for name, op in registry.all_ops().items():
        if name != "Input":
            assert name in types
        if op.kind_of:
            assert op.kind_of in types


def test_params_descriptions_reach_the_schema(schema):
    lin = json.dumps(schema["$defs"])
    assert "Output width." in lin  # Linear.out_features Field(description=...)


TINY = {"name": "t", "layers": [{"type": "Linear", "params": {"in_features": 4, "out_features": 2}}]}


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["layers"][0]["params"].update(out_feature=3), "$.layers[0].params"),
    (lambda d: d["layers"][0]["params"].update(out_features="2"), "$.layers[0].params.out_features"),
    (lambda d: d["layers"][0].update(type="Linearr"), "$.layers[0].type"),
    (lambda d: d["layers"][0].update(repeat=0), "$.layers[0].repeat"),
    (lambda d: d["layers"][0].update(colour="red"), "$.layers[0]"),
    (lambda d: d["layers"][0]["params"].pop("out_features"), "$.layers[0].params"),
    (lambda d: d.update(contxt=4), "$"),
    (lambda d: d.update(budget={"vram": "6GiB", "mode": "both"}), "$.budget"),
])
def test_schema_refuses(schema, mutate, where):
    doc = json.loads(json.dumps(TINY))
    assert errors(schema, doc) == []
    mutate(doc)
    errs = errors(schema, doc)
    assert errs and any(e.startswith(where) for e in errs), errs


def test_include_makes_params_partial(schema):
    doc = {"name": "t", "layers": [{"include": "components/x.json", "params": {"bias": False}},
                                   {"include": "components/x.json", "type": "Linear", "params": {"bias": False}}]}
    assert errors(schema, doc) == []
    doc["layers"][1]["params"]["biass"] = True
    assert errors(schema, doc)


def test_component_schema(schema):
    assert errors(schema, {"type": "Linear", "params": {"bias": False}}, component=True) == []
    assert errors(schema, {"type": "Linear", "params": {"bias": 1}}, component=True)
    assert errors(schema, {"layers": []}, component=True)
