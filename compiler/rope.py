"""Rotary position embeddings with transformers' scaling types, as spec params, and their resolution per layer.

A `RopeScaling` is one entry of transformers' `rope_parameters` (the legacy `rope_scaling`) without the base, which
omnic keeps in `rope_theta` / `rope_theta_local`: the type and the values its rule reads. `resolve_scaling` fills in
what transformers derives from the config (yarn's and longrope's `factor` and `attention_factor`, yarn's
`beta_fast` / `beta_slow`) and checks the keys each type needs, so every layer's node carries complete values.
The frequencies themselves are computed in one place for both runtimes, `runtime_common/rope.py`.

Types (transformers/modeling_rope_utils.py, `ROPE_INIT_FUNCTIONS`):
  default    inv_freq = theta^(-2i/d)
  linear     inv_freq / factor
  dynamic    NTK: theta grows with the sequence length past max_position_embeddings
  llama3     low frequencies / factor, high kept, a smooth ramp between (low_freq_factor, high_freq_factor)
  yarn       interpolation / extrapolation blended over a ramp (beta_fast, beta_slow, truncate); cos and sin
             multiplied by attention_factor (from mscale / mscale_all_dim or 0.1 ln(factor) + 1)
  longrope   inv_freq / short_factor, or / long_factor once the sequence passes original_max_position_embeddings;
             cos and sin multiplied by attention_factor (sqrt(1 + ln(factor) / ln(original)))
"""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

RopeType = Literal["default", "linear", "dynamic", "llama3", "yarn", "longrope"]
ROPE_TYPES: tuple[str, ...] = RopeType.__args__

# the keys each type requires (beyond rope_type), as transformers' validation functions list them
REQUIRED: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor", "max_position_embeddings"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("original_max_position_embeddings",),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
}


class RopeScaling(BaseModel):
    """One layer's rotary scaling (transformers' rope_parameters without rope_theta)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    rope_type: RopeType = Field("default", description="default | linear | dynamic | llama3 | yarn | longrope")
    factor: Optional[float] = Field(None, gt=0, description="Scaling factor (yarn / longrope: default "
                                                            "max_position_embeddings / original).")
    original_max_position_embeddings: Optional[int] = Field(None, ge=1, description="Pretraining context "
                                                                                    "(llama3, yarn, longrope).")
    max_position_embeddings: Optional[int] = Field(None, ge=1, description="The model's context (dynamic: where "
                                                                           "the base starts growing).")
    low_freq_factor: Optional[float] = Field(None, gt=0, description="llama3.")
    high_freq_factor: Optional[float] = Field(None, gt=0, description="llama3.")
    beta_fast: Optional[float] = Field(None, description="yarn: ramp bound (default 32).")
    beta_slow: Optional[float] = Field(None, description="yarn: ramp bound (default 1).")
    mscale: Optional[float] = Field(None, description="yarn: attention factor numerator scale.")
    mscale_all_dim: Optional[float] = Field(None, description="yarn: attention factor denominator scale.")
    truncate: bool = Field(True, description="yarn: round the correction range to whole dimensions.")
    attention_factor: Optional[float] = Field(None, gt=0, description="cos / sin multiplier (yarn, longrope); "
                                                                      "resolved when absent.")
    short_factor: Optional[list[float]] = Field(None, description="longrope: per-frequency divisors, short context.")
    long_factor: Optional[list[float]] = Field(None, description="longrope: per-frequency divisors past original.")


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's magnitude correction 0.1 mscale ln(scale) + 1 (1 for scale <= 1), as transformers' get_mscale (DeepSeek
    attention also multiplies its softmax scale by yarn_get_mscale(factor, mscale_all_dim)^2)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def resolve_scaling(s: RopeScaling, dim: int) -> tuple[RopeScaling, list[tuple[str, str]]]:
    """Complete `s` for `dim` rotated features: (resolved, errors as (field, message)). Derived values follow
    transformers 5.x: yarn / longrope factor = max_position_embeddings / original when absent; their attention
    factor; yarn's beta defaults 32 / 1."""
    errors = [(k, f"rope type {s.rope_type!r} needs {k}") for k in REQUIRED[s.rope_type] if getattr(s, k) is None]
    up: dict = {}
    factor = s.factor
    if s.rope_type in ("yarn", "longrope") and factor is None:
        if s.max_position_embeddings is None or s.original_max_position_embeddings is None:
            errors.append(("factor", f"rope type {s.rope_type!r} needs factor, or max_position_embeddings and "
                                     "original_max_position_embeddings"))
        else:
            factor = s.max_position_embeddings / s.original_max_position_embeddings
            up["factor"] = factor
    if s.rope_type == "dynamic" and dim <= 2:
        errors.append(("rope_type", f"dynamic rope needs more than 2 rotated dims (theta^(d / (d - 2))); got {dim}"))
    if s.rope_type in ("yarn", "longrope") and s.original_max_position_embeddings == 1:
        errors.append(("original_max_position_embeddings", f"{s.rope_type} needs original_max_position_embeddings "
                                                           "> 1 (its rules take its logarithm)"))
    if errors:
        return s, errors
    if s.rope_type == "yarn":
        up.update(beta_fast=float(s.beta_fast or 32), beta_slow=float(s.beta_slow or 1))
        if s.attention_factor is None:
            if s.mscale and s.mscale_all_dim:
                up["attention_factor"] = yarn_get_mscale(factor, s.mscale) / yarn_get_mscale(factor, s.mscale_all_dim)
            else:
                up["attention_factor"] = yarn_get_mscale(factor)
    elif s.rope_type == "longrope":
        for k in ("short_factor", "long_factor"):
            if len(getattr(s, k)) != dim // 2:
                errors.append((k, f"{k} has {len(getattr(s, k))} entries; the rotated dims {dim} need {dim // 2}"))
        if s.attention_factor is None:
            orig = s.original_max_position_embeddings
            up["attention_factor"] = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    elif s.rope_type == "llama3" and s.high_freq_factor == s.low_freq_factor:
        errors.append(("high_freq_factor", "llama3 needs high_freq_factor != low_freq_factor"))
    return s.model_copy(update=up), errors


def attention_factor(s: Optional[RopeScaling]) -> float:
    """The multiplier of cos and sin (1 except yarn and longrope); `s` resolved."""
    if s is None or s.rope_type not in ("yarn", "longrope"):
        return 1.0
    return float(s.attention_factor)


def from_hf(entry: dict, max_position_embeddings: Optional[int]) -> RopeScaling:
    """A RopeScaling from one transformers `rope_parameters` / `rope_scaling` dict (legacy key `type` read as
    `rope_type`; `rope_theta` and `partial_rotary_factor` are the caller's). Unknown keys raise ValueError naming
    them; so does an unknown type."""
    d = {k: v for k, v in entry.items() if k not in ("rope_theta", "partial_rotary_factor", "type")}
    d["rope_type"] = entry.get("rope_type", entry.get("type", "default"))
    if d["rope_type"] not in ROPE_TYPES:
        raise ValueError(f"rope type {d['rope_type']!r} is not supported by omnic (supported: "
                         f"{', '.join(ROPE_TYPES)})")
    unknown = sorted(set(d) - set(RopeScaling.model_fields))
    if unknown:
        raise ValueError(f"rope parameters {unknown} are not supported by omnic (known: "
                         f"{', '.join(sorted(RopeScaling.model_fields))})")
    for k in ("factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
              "attention_factor"):
        if isinstance(d.get(k), int) and not isinstance(d.get(k), bool):
            d[k] = float(d[k])
    for k in ("short_factor", "long_factor"):
        if d.get(k) is not None:
            d[k] = [float(x) for x in d[k]]
    if d["rope_type"] in ("dynamic", "yarn", "longrope") and max_position_embeddings:
        d.setdefault("max_position_embeddings", int(max_position_embeddings))
    if d["rope_type"] in ("llama3", "yarn", "longrope") and max_position_embeddings:
        d.setdefault("original_max_position_embeddings", int(max_position_embeddings))
    if d["rope_type"] == "default":
        d = {"rope_type": "default"}
    return RopeScaling(**d)
