"""The spec document: pydantic models of everything outside the layers' params, and validation with locations.

A spec is the OMNI-LITE format (`name`, `layers` of `{type, params}`, `explanation`) plus optional extensions:
`inputs`, `outputs`, per-layer `id` / `inputs` / `frozen` / `include`, `stages`, `budget`, `expect`, `$schema`.
Layer params are validated against each op's own model (see `registry.py`); this file validates the rest.
"""
from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .diagnostics import Diagnostics, did_you_mean

_strict = ConfigDict(strict=True, extra="forbid", frozen=True)

MAX_REPEAT = 4096
SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {
    "": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12,
    "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_size(v: Union[int, float, str]) -> float:
    """`6GiB` -> 6*2**30, `480M` -> 480e6, `2.5B` -> 2.5e9 (B = billion for counts, GB/GiB for bytes)."""
    if isinstance(v, bool):
        raise ValueError("expected a number or a size like '6GiB'")
    if isinstance(v, (int, float)):
        f = float(v) if abs(v) < 1e300 else float("inf")     # float() of a huge int raises OverflowError
    else:
        m = SIZE_RE.match(v)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read size {v!r}; write e.g. 6GiB, 8GB, 480M, 2.5B")
        f = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not f < 1e30:                                           # also refuses inf and NaN
        raise ValueError(f"size {str(v)[:20]} is out of range")
    return f


class InputDecl(BaseModel):
    model_config = _strict
    name: str = Field(description="Name of the model input, referenced by layers' `inputs`.")
    kind: Literal["image", "video", "ids", "tokens", "vector", "scalar"] = Field(
        description="image (B,C,H,W) | video (B,F,C,H,W) | ids (B,T) token ids | tokens (B,N,D) | vector (B,D) | "
                    "scalar (B,) e.g. diffusion time")
    shape: list[Union[int, str]] = Field(description="Dimensions: integers or symbols (B batch, T text length, F frames).")
    dtype: Optional[Literal["float", "int"]] = None
    note: Optional[str] = None


class Budget(BaseModel):
    model_config = _strict
    vram: Union[str, int, float] = Field(description="Memory limit, e.g. '6GiB' or bytes.")
    format: str = Field("bf16", description="Storage format of the weights (see `omnic check --help`).")
    mode: Literal["inference", "training"] = "inference"
    stage: Optional[str] = Field(None, description="Training stage whose frozen set applies (mode training).")
    batch: int = Field(1, ge=1, le=1_000_000)                    # the bounds of the spec's own batch and context
    context: Optional[int] = Field(None, ge=1, le=10_000_000,
                                   description="Text tokens; defaults to the spec's `context`.")
    devices: Optional[int] = Field(None, ge=1, le=1_000_000, description="Devices training together: the limit is "
                                   "per device (mode training; docs/scale-out.md).")
    strategy: Optional[str] = Field(None, description="How the devices share the model: ddp, zero1, zero2, fsdp "
                                                      "(default with devices) or hsdp:R (R replica groups).")
    grad_accum: Optional[int] = Field(None, ge=1, le=1_000_000, description="Micro-batches per optimizer step "
                                      "(the batch is one micro-batch per device).")
    note: Optional[str] = None

    @field_validator("vram")
    @classmethod
    def _vram(cls, v):
        if parse_size(v) <= 0:
            raise ValueError("vram must be positive")
        return v


class Expectation(BaseModel):
    model_config = _strict
    value: Union[int, float, str] = Field(description="Claimed figure: a number or '480M', '2.5B', '10GB'.")
    tolerance: float = Field(0.05, ge=0, le=10, description="Allowed relative difference (0.05 = 5%).")
    scope: Optional[list[str]] = Field(None, description="params.* only: count just these layer ids (and their "
                                                        "parts), e.g. a backbone's claimed size.")
    note: Optional[str] = None

    @field_validator("value")
    @classmethod
    def _value(cls, v):
        parse_size(v)
        return v


EXPECT_KEYS = {
    "params.total": "parameters, tied weights once",
    "params.active": "parameters used per token (MoE: top-k experts)",
    "params.trainable": "parameters not frozen",
    "memory.inference": "bytes: weights + KV cache + activation peak (budget format)",
    "memory.training": "bytes: weights + gradients + AdamW states + activations",
    "flops.prefill": "FLOPs of one forward over the context",
    "flops.decode": "FLOPs per decoded token",
}


class Stage(BaseModel):
    model_config = _strict
    train: Optional[list[str]] = Field(None, description="Layer ids (or id prefixes) trained in this stage.")
    freeze: Optional[list[str]] = Field(None, description="Layer ids (or prefixes) frozen; the rest trains.")
    lr: Optional[dict[str, float]] = Field(None, description="Learning rates by id prefix (informational).")
    note: Optional[str] = None


class SpecDoc(BaseModel):
    """The top level of a spec (layers are checked one by one against the op registry)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)
    schema_: Optional[str] = Field(None, alias="$schema", description="Path of specs/schema.json, for editors.")
    name: str = Field(description="Model name.")
    layers: list[dict[str, Any]] = Field(description="Layers in order; see the layer types.")
    explanation: Optional[str] = Field(None, description="Free text for people.")
    inputs: Optional[list[InputDecl]] = Field(None, description="Model inputs; inferred from the layers if absent.")
    outputs: Optional[list[str]] = Field(None, description="Layer ids whose outputs are model outputs.")
    context: int = Field(2048, ge=1, le=10_000_000, description="Default text length T for costs and memory.")
    batch: int = Field(1, ge=1, le=1_000_000, description="Default batch size B for costs and memory.")
    frames: int = Field(8, ge=1, le=100_000, description="Default frame count F for video inputs.")
    stages: Optional[dict[str, Stage]] = Field(None, description="Named training stages with their frozen sets.")
    budget: Optional[Budget] = None
    expect: Optional[dict[str, Expectation]] = Field(None, description="Claimed totals; keys: " + ", ".join(EXPECT_KEYS))
    note: Optional[str] = None

    @field_validator("expect")
    @classmethod
    def _expect_keys(cls, v):
        if v:
            for k in v:
                if k not in EXPECT_KEYS:
                    hint = did_you_mean(k, EXPECT_KEYS)
                    raise ValueError(f"unknown expectation {k!r}" + (f"; {hint}" if hint else "")
                                     + f" (known: {', '.join(EXPECT_KEYS)})")
        return v


LAYER_KEYS = {"type": "op name", "params": "op parameters", "id": "name for wiring and weights",
              "inputs": "ids (or id.output) this layer consumes", "frozen": "not trained",
              "include": "component spec file providing type and params", "repeat": "stack this layer N times",
              "note": "free text"}

_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "float_type": "a number", "string_type": "a string",
    "bool_type": "true or false", "list_type": "a list", "dict_type": "an object", "model_type": "an object",
    "int_from_float": "an integer", "literal_error": None, "missing": None,
}


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return "null"


def report_validation(e: ValidationError, base: tuple, diag: Diagnostics, model: type[BaseModel] | None = None) -> None:
    """Turn pydantic errors into located diagnostics with 'expected X, got Y' and 'did you mean'."""
    for err in e.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-after")))
        # pydantic puts union branch names in loc ("int", "str", "list[...]"): drop those
        clean = []
        for x in loc:
            if isinstance(x, str) and (x in ("int", "str", "float", "bool") or "[" in x):
                continue
            clean.append(x)
        path = base + tuple(clean)
        t = err["type"]
        inp = err.get("input")
        if t == "extra_forbidden":
            key = clean[-1] if clean else "?"
            fields = []
            if model is not None:
                fields = [f.alias or n for n, f in model.model_fields.items()]     # `$schema`, not `schema_`
                if len(clean) > 1:
                    fields = []
            hint = did_you_mean(str(key), fields) if fields else None
            diag.error(path, f"unknown key {key!r}", hint or (f"known keys: {', '.join(fields)}" if fields else None),
                       code="unknown-key")
        elif t == "missing":
            diag.error(path, "required key is missing", code="missing")
        elif t in _TYPE_WORDS and _TYPE_WORDS[t]:
            hint = None
            if isinstance(inp, str) and t.startswith(("int", "float")):
                hint = "write the number without quotes"
            if isinstance(inp, bool):
                hint = "booleans are not numbers here"
            diag.error(path, f"expected {_TYPE_WORDS[t]}, got {_json_type(inp)}", hint, code="type")
        elif t == "literal_error":
            exp = err.get("ctx", {}).get("expected", "")
            hint = did_you_mean(str(inp), [s.strip(" '") for s in str(exp).replace(" or ", ",").split(",")])
            diag.error(path, f"{_json_type(inp)} is not one of {exp}", hint, code="enum")
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            diag.error(path, msg, code="value")
