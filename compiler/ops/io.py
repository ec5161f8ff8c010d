"""Model inputs as graph nodes."""
from __future__ import annotations

from typing import Literal, Union

from ..ir import TensorType
from ..registry import Op, Params, register

SYMBOLS = {"B": "batch", "T": "text tokens", "F": "video frames"}


class InputParams(Params):
    kind: Literal["image", "video", "ids", "tokens", "vector", "scalar"]
    shape: list[Union[int, str]]
    dtype: Literal["float", "int"] = "float"


@register
class Input(Op):
    name = "Input"
    Params = InputParams
    doc = "A model input (declared in the spec's `inputs`, or created by wiring inference with a warning)."

    @classmethod
    def shape(cls, p, ins):
        return {"out": TensorType.make(p.shape, p.kind, p.dtype)}
