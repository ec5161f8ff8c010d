"""Joining and splitting streams: Concat, Select, Reshape."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..dims import Dim
from ..ir import IMAGE, TOKENS, VECTOR, TensorType
from ..registry import Op, Params, Slot, register


class ConcatParams(Params):
    axis: Literal["sequence", "channels"] = Field(
        "sequence", description="sequence: (B, N1, D) + (B, N2, D) -> (B, N1+N2, D); channels: join widths "
                                "(tokens (B, N, D1) + (B, N, D2) -> (B, N, D1+D2), maps along C).")


@register
class Concat(Op):
    name = "Concat"
    Params = ConcatParams
    slots = (Slot("x", (TOKENS, IMAGE, VECTOR), variadic=True),)
    doc = "Concatenate two or more streams along the sequence or the channels."
    decode = "text_join"      # along the sequence, with a fixed stream; along the channels: `decode_as`

    @classmethod
    def decode_as(cls, p):
        """A join of the text stream with a fixed one along the sequence; along the channels, not decodable."""
        return cls.decode if p.axis == "sequence" else None

    @classmethod
    def resolve(cls, p, ins, diag):
        if len(ins) < 2:
            diag("", f"Concat needs at least two inputs, got {len(ins)}")
            return p
        kinds = {t.kind for t in ins}
        if len(kinds) > 1:
            diag("axis", "cannot concatenate different kinds: " + ", ".join(f"{t.kind} {t}" for t in ins))
            return p
        ranks = {len(t.shape) for t in ins}
        if len(ranks) > 1:
            diag("axis", "inputs have different ranks: " + ", ".join(str(t) for t in ins))
            return p
        ax = cls.axis(p, ins[0])
        for i, t in enumerate(ins[1:], 1):
            for k, (a, b) in enumerate(zip(ins[0].shape, t.shape)):
                if k != ax and a != b:
                    diag("axis", f"input {i} {t} does not match input 0 {ins[0]} in dimension {k} "
                                 f"({b} vs {a}); only dimension {ax} may differ for axis '{p.axis}'",
                         "resample or project the inputs to matching shapes first (GridResample, Linear)")
                    return p
        return p

    @staticmethod
    def axis(p, t: TensorType) -> int:
        if p.axis == "sequence":
            return 1
        return 1 if t.kind == IMAGE else len(t.shape) - 1

    @classmethod
    def shape(cls, p, ins):
        ax = cls.axis(p, ins[0])
        total = Dim.of(0)
        for t in ins:
            total = total + t.shape[ax]
        shape = list(ins[0].shape)
        shape[ax] = total
        keep_grid = p.axis == "channels"
        return {"out": TensorType(tuple(shape), ins[0].kind, ins[0].dtype,
                                  ins[0].grid if keep_grid else None, ins[0].prefix if keep_grid else 0)}


class SelectParams(Params):
    tokens: Literal["cls", "patches", "range", "prefix"] = Field(
        description="cls: the first token -> (B, D); patches: drop the CLS/register prefix; prefix: the prefix "
                    "tokens; range: tokens [start, stop)")
    start: Optional[int] = Field(None, ge=0)
    stop: Optional[int] = Field(None, ge=1)


@register
class Select(Op):
    name = "Select"
    Params = SelectParams
    slots = (Slot("x", (TOKENS,)),)
    doc = "Take the CLS token, the patch tokens (dropping CLS and registers), or a range of tokens."

    @classmethod
    def resolve(cls, p, ins, diag):
        t = ins[0]
        if p.tokens == "cls" and t.prefix < 1:
            diag("tokens", f"input {t} has no CLS token (no prefix tokens before its patches)")
        if p.tokens == "range":
            if p.start is None or p.stop is None or p.stop <= p.start:
                diag("start", "range needs start < stop")
            elif t.shape[1].is_const and p.stop > t.shape[1].const:
                diag("stop", f"stop {p.stop} is past the sequence length {t.shape[1]}")
        return p

    @classmethod
    def shape(cls, p, ins):
        t = ins[0]
        b, n, d = t.shape
        if p.tokens == "cls":
            return {"out": TensorType((b, d), VECTOR)}                                  # (B, D)
        if p.tokens == "patches":
            return {"out": TensorType((b, n - t.prefix, d), TOKENS, grid=t.grid)}     # (B, N - prefix, D)
        if p.tokens == "prefix":
            return {"out": TensorType((b, Dim.of(t.prefix), d), TOKENS)}
        return {"out": TensorType((b, Dim.of(p.stop - p.start), d), TOKENS)}


class ReshapeParams(Params):
    to: Literal["map", "tokens", "grid_tokens"] = Field(
        description="map: tokens (B, N, D) on a grid -> (B, D, h, w); tokens: (B, C, H, W) -> (B, H*W, C); "
                    "grid_tokens: (B, h*w, D) -> (B, h, w, D) for per-position heads")
    channels: Optional[int] = Field(None, ge=1, description="map only: split D into channels x sub-grid "
                                                          "(B, N, C*s*s) -> (B, C, h*s, w*s)")


@register
class Reshape(Op):
    name = "Reshape"
    Params = ReshapeParams
    slots = (Slot("x", (TOKENS, IMAGE)),)
    doc = "Switch between token sequences and spatial maps."

    @classmethod
    def resolve(cls, p, ins, diag):
        t = ins[0]
        if p.to in ("map", "grid_tokens"):
            if t.kind != TOKENS or t.grid is None:
                diag("to", f"input {t} has no grid; only tokens from a patch grid can become a map")
            elif p.channels:
                d = t.width
                s2 = d // p.channels if d else 0
                s = int(round(s2 ** 0.5))
                if d is None or d % p.channels or s * s != s2:
                    diag("channels", f"width {d} is not channels {p.channels} x a square sub-grid "
                                     f"(needs {p.channels} x s x s values per token)",
                         f"e.g. 4-channel 8x8 latents need 256 values per token")
        return p

    @classmethod
    def shape(cls, p, ins):
        t = ins[0]
        if p.to == "tokens":
            b, c, h, w = t.shape
            return {"out": TensorType.make([b, h * w, c], TOKENS, grid=(h.const, w.const))}
        b, n, d = t.shape
        h, w = t.grid
        if p.to == "grid_tokens":
            return {"out": TensorType((b, Dim.of(h), Dim.of(w), d), TOKENS)}                # (B, h, w, D)
        if p.channels:
            s = int(round((d.const // p.channels) ** 0.5))
            return {"out": TensorType.make([b, p.channels, h * s, w * s], IMAGE)}            # (B, C, h*s, w*s)
        return {"out": TensorType((b, d, Dim.of(h), Dim.of(w)), IMAGE)}                      # (B, D, h, w)
