"""The op registry: each layer type is declared once, with its rules beside it.

An op declares
  Params      a pydantic model (strict, extra keys forbidden); the JSON Schema is generated from it;
  slots       its inputs: the tensor kinds each accepts (for wiring inference);
  resolve     fills every dimension the spec left to inference (from input types) and checks consistency;
  shape       input types -> output types;
  weights     the parameter tensors: dotted names relative to the node, shapes, roles; counts derive from these;
  flops       FLOPs (2 x multiply-accumulates) for a prefill or one decoded token;
  decode_state  the decode state a node keeps between calls (`State`: kind, shape per example, growth per token);
  state       its size in elements (by default from `decode_state`);
  decode      how decoding runs a stateless node on new tokens alone: "positionwise" or "text_join" (None: it cannot);
              `decode_as(p)` where it depends on the params (a Concat joins text only along the sequence);
  ids_bound   for ops that read token ids: the exclusive bound of valid ids (`runtime_common/inputs.py` draws below it);
  ids_reserved  positions of an ids sequence the op fills itself (image placeholders): example inputs are longer;
  workspace   transient elements inside the op at inference (attention scores, MLP hidden), for the memory peak;
  saved       elements kept for the backward pass besides the outputs (training memory);
  expand      composites return a list of layers instead of being a node.
Runtimes register implementations against the same names (`runtime_torch.registry`, `runtime_mlx.registry`).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field

from .dims import Dim
from .ir import TensorType


class Params(BaseModel):
    """Base of every op's parameters: strict types, unknown keys refused, immutable, `note` allowed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)
    note: Optional[str] = Field(None, description="Free text for people; never interpreted.")


@dataclass(frozen=True)
class W:
    """One parameter tensor of an op.

    role: how quantisers treat it: "linear" (quantised), "conv", "embedding" and "head" (kept 16-bit by default),
    "norm" and "bias" (kept 16-bit), "other" (positions, tokens, scales; 16-bit).
    experts: E when the tensor stacks E experts of which `top_k` are active per token.
    tied_to: full dotted name of the tensor this one shares storage with (counted once, at its owner).
    init: how runtimes initialise it, a rule of runtime_common/init.py's RULES: "normal" (N(0, std)), "zeros",
          "ones", "const:<value>", ... (default by role: norm -> ones, bias -> zeros, everything else normal).
    buffer: a persistent buffer, not a parameter (DeepSeek-V3's e_score_correction_bias): in the state dict and
            the weight bytes, not in the parameter counts, not trained.
    """

    shape: tuple[int, ...]
    role: str = "linear"
    experts: int = 0
    top_k: int = 0
    tied_to: Optional[str] = None
    init: Optional[str] = None
    buffer: bool = False

    @property
    def init_rule(self) -> str:
        if self.init:
            return self.init
        return {"norm": "ones", "bias": "zeros"}.get(self.role, "normal")

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class State:
    """One tensor of decode state a node keeps per example between decoding calls.

    kind: "kv" (keys or values: `grows` positions per token, the last `cap` kept; a sliding window keeps window - 1),
          "conv" (a convolution's last inputs), "ssm" (a recurrent state); the last two are replaced at each call.
    shape: per example, without the batch axis; for a growing state, the shape of one position, the position axis
          `axis` holding 1.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    grows: int = 0
    axis: int = 0
    cap: Optional[int] = None

    def numel(self, tokens: int) -> int:
        """Elements per example after `tokens` tokens."""
        n = 1
        for d in self.shape:
            n *= d
        if self.grows:
            held = tokens * self.grows
            n *= min(held, self.cap) if self.cap is not None else held
        return n


@dataclass(frozen=True)
class Slot:
    name: str
    kinds: tuple[str, ...]
    optional: bool = False
    variadic: bool = False     # takes one or more tensors (Concat)


@dataclass
class Ctx:
    """How to read shapes for a cost rule.

    mode "prefill": the whole input (T = context); "decode": what one more text token adds (the part of each
    dimension that grows with T, T set to 1), with attention over `kv` tokens already cached.
    """

    mode: str
    env: dict[str, int]

    def n(self, d: Dim | int) -> int:
        d = Dim.of(d)
        return d.eval(self.env) if self.mode == "prefill" else d.marginal("T", self.env)

    def full(self, d: Dim | int) -> int:
        """The whole length, also in decode mode (the number of cached positions attended to)."""
        return Dim.of(d).eval(self.env)


class Op:
    name: ClassVar[str]
    Params: ClassVar[type[Params]]
    slots: ClassVar[tuple[Slot, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    doc: ClassVar[str] = ""
    #: spec spellings that select this op through a parent type, e.g. TransformerBlock + params.type
    kind_of: ClassVar[Optional[str]] = None
    composite: ClassVar[bool] = False
    #: how decoding runs the node on new tokens alone: "positionwise" (each token independently), "text_join" (joins
    #: the text stream with a fixed one: new tokens pass through); None: only as a stateful node, or not at all
    decode: ClassVar[Optional[str]] = None

    # --- wiring -------------------------------------------------------------------------------------------------
    @classmethod
    def in_width(cls, p) -> Optional[int]:
        """The feature width the first input must have, if the params fix it (for wiring inference)."""
        return None

    # --- stacking -----------------------------------------------------------------------------------------------
    @classmethod
    def stack(cls, p) -> int:
        """How many copies the layer unrolls into (params like `depth`); the layer-level `repeat` multiplies it."""
        return 1

    @classmethod
    def unroll(cls, p, i: int, n: int):
        """Params of copy i of n (e.g. the mixer of layer i from `layer_types`)."""
        return p

    @classmethod
    def check(cls, p, diag) -> None:
        """Checks on params alone, before wiring: report to `diag(field, message, hint=None, severity="error")`."""

    # --- rules --------------------------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, p, ins: list[TensorType], diag) -> Any:
        """Return params with every inferable dimension filled in; report contradictions to `diag(path, msg, hint)`."""
        return p

    @classmethod
    def shape(cls, p, ins: list[TensorType]) -> dict[str, TensorType]:
        raise NotImplementedError

    @classmethod
    def weights(cls, p) -> dict[str, W]:
        return {}

    @classmethod
    def handles(cls, p) -> dict[str, Optional[str]]:
        """attribute -> dotted name of a declared module or tensor the runtimes' forward code reads under that
        attribute (None where p declares none there); both runtimes keep exactly these (`Node.hold`)."""
        return {}

    @classmethod
    def flops(cls, p, ins: list[TensorType], outs: dict[str, TensorType], ctx: Ctx) -> int:
        return 0

    @classmethod
    def decode_state(cls, p, ins: list[TensorType]) -> tuple[State, ...]:
        """The state the node keeps between decoding calls (none: stateless)."""
        return ()

    @classmethod
    def state(cls, p, ins: list[TensorType], outs: dict[str, TensorType], ctx: Ctx) -> int:
        """Decode state in elements: the declared `decode_state` of a batch (B, N, ...) input after N tokens."""
        states = cls.decode_state(p, ins)
        if not states:
            return 0
        x = ins[0]
        b, n = ctx.full(x.shape[0]), ctx.full(x.shape[1])
        return b * sum(s.numel(n) for s in states)

    @classmethod
    def decode_as(cls, p) -> Optional[str]:
        """How decoding runs this node (stateless) on new tokens alone, for params p: the class's `decode` unless
        the params change it."""
        return cls.decode

    @classmethod
    def ids_reserved(cls, p, ins: list[TensorType], env: dict[str, int]) -> int:
        """Positions of each example's id sequence this op fills itself (`place_ids`: image placeholders) at the
        symbol values `env`; example inputs add them to the text tokens asked for."""
        return 0

    @classmethod
    def ids_bound(cls, p) -> Optional[int]:
        """For an op reading token ids: ids valid for it are below this (a vocabulary); None: no bound."""
        return None

    @classmethod
    def place_ids(cls, p, ids, ins: list[TensorType], env: dict[str, int]) -> None:
        """Make example ids (an int array (B, T), drawn below every consumer's `ids_bound`) valid for this op in
        place (e.g. image placeholders)."""

    @classmethod
    def workspace(cls, p, ins: list[TensorType], outs: dict[str, TensorType], ctx: Ctx) -> int:
        return 0

    @classmethod
    def saved(cls, p, ins: list[TensorType], outs: dict[str, TensorType], ctx: Ctx) -> int:
        """Elements saved for the backward pass besides the outputs (default: the inference workspace)."""
        return cls.workspace(p, ins, outs, ctx)

    @classmethod
    def expand(cls, p, layer: dict) -> list[dict]:
        raise NotImplementedError


_OPS: dict[str, type[Op]] = {}
_KINDS: dict[tuple[str, str], str] = {}
_unloaded: Optional[list[str]] = None      # op modules not imported yet, in import order (None: not listed yet)
#: op modules imported first when an op is looked up by name: the ones most specs use. Only an order: every module is
#: imported before a name is reported unknown, so a module missing here costs start-up time, never correctness.
COMMON = ("io", "basic", "transformer", "vision", "heads", "merge")


def register(op: type[Op]) -> type[Op]:
    if op.name in _OPS:
        raise ValueError(f"op {op.name} registered twice")
    _OPS[op.name] = op
    if op.kind_of:
        _KINDS[(op.kind_of, op.name)] = op.name
    return op


def _pending() -> list[str]:
    global _unloaded
    if _unloaded is None:
        from . import ops
        names = sorted(m.name for m in pkgutil.iter_modules(ops.__path__))
        _unloaded = [n for n in COMMON if n in names] + [n for n in names if n not in COMMON]
    return _unloaded


def _load_next() -> None:
    importlib.import_module(f"{__package__}.ops.{_pending().pop(0)}")


def _load() -> None:
    while _pending():
        _load_next()


def find(name: str) -> Optional[type[Op]]:
    """The op registered as `name`, or None: op modules are imported one at a time (COMMON first) until one has
    registered it, so a spec's check imports only the modules of the ops it uses (and those before them)."""
    while name not in _OPS and _pending():
        _load_next()
    return _OPS.get(name)


def get(name: str) -> type[Op]:
    op = find(name)
    if op is None:
        raise KeyError(name)
    return op


def all_ops() -> dict[str, type[Op]]:
    _load()
    return dict(sorted(_OPS.items()))


def kind_op(parent: str, kind: str) -> Optional[str]:
    _load()
    return _KINDS.get((parent, kind))


def linear_flops(rows: int, fan_in: int, fan_out: int) -> int:
    """2 x multiply-accumulates of a (rows x fan_in) @ (fan_in x fan_out) product."""
    return 2 * rows * fan_in * fan_out
