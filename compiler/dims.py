"""Symbolic dimensions: polynomials over a few named sizes.

Shapes in omnic are tuples of `Dim`. Most dimensions are plain integers; the ones that depend on run-time sizes are
polynomials in the symbols of the glossary below, so that one shape inference serves every batch size and length,
and the cost pass can evaluate the same shapes for a prefill (`T = context`) or for one decoded token.

Glossary (the one vocabulary of shape comments in this project):
  B   batch                          T   text tokens (length of the token-id input)
  F   video frames                   N   tokens of a sequence (any origin), D  width
  H,W image or map height/width      C   channels          V  vocabulary
  nh  attention heads                kv  key/value heads   hs head size     E experts
"""
from __future__ import annotations

from typing import Mapping, Union

Term = tuple[str, ...]  # sorted symbol names of a monomial; () is the constant term


class Dim:
    """An integer polynomial in symbols, e.g. `T + 64` or `B*F`. Immutable and hashable."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Mapping[Term, int]):
        t = {k: v for k, v in terms.items() if v != 0}
        object.__setattr__(self, "terms", t)
        object.__setattr__(self, "_hash", hash(frozenset(t.items())))

    # construction ------------------------------------------------------------------------------------------------
    @staticmethod
    def of(x: "DimLike") -> "Dim":
        if isinstance(x, Dim):
            return x
        if isinstance(x, bool):
            raise TypeError("a dimension cannot be a boolean")
        if isinstance(x, int):
            return Dim({(): x})
        if isinstance(x, str):
            return parse_dim(x)
        raise TypeError(f"not a dimension: {x!r}")

    @staticmethod
    def sym(name: str) -> "Dim":
        return Dim({(name,): 1})

    # queries -----------------------------------------------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return all(k == () for k in self.terms)

    @property
    def const(self) -> int:
        """The value of a constant dimension (raises for a symbolic one)."""
        if not self.is_const:
            raise ValueError(f"dimension {self} is not a constant")
        return self.terms.get((), 0)

    def symbols(self) -> set[str]:
        return {s for k in self.terms for s in k}

    def eval(self, env: Mapping[str, int]) -> int:
        total = 0
        for k, c in self.terms.items():
            v = c
            for s in k:
                v *= env[s]
            total += v
        return total

    def marginal(self, sym: str, env: Mapping[str, int]) -> int:
        """Terms that contain `sym`, with `sym` set to 1: what one more `sym` adds (one decoded token for `T`)."""
        total = 0
        for k, c in self.terms.items():
            if sym in k:
                v = c
                for s in k:
                    v *= 1 if s == sym else env[s]
                total += v
        return total

    # arithmetic --------------------------------------------------------------------------------------------------
    def __add__(self, o: "DimLike") -> "Dim":
        o = Dim.of(o)
        t = dict(self.terms)
        for k, v in o.terms.items():
            t[k] = t.get(k, 0) + v
        return Dim(t)

    __radd__ = __add__

    def __neg__(self) -> "Dim":
        return Dim({k: -v for k, v in self.terms.items()})

    def __sub__(self, o: "DimLike") -> "Dim":
        return self + (-Dim.of(o))

    def __rsub__(self, o: "DimLike") -> "Dim":
        return Dim.of(o) - self

    def __mul__(self, o: "DimLike") -> "Dim":
        o = Dim.of(o)
        t: dict[Term, int] = {}
        for k1, v1 in self.terms.items():
            for k2, v2 in o.terms.items():
                k = tuple(sorted(k1 + k2))
                t[k] = t.get(k, 0) + v1 * v2
        return Dim(t)

    __rmul__ = __mul__

    def __floordiv__(self, o: "DimLike") -> "Dim":
        o = Dim.of(o)
        if not o.is_const or o.const == 0:
            raise ValueError(f"cannot divide {self} by {o}")
        d = o.const
        if self.is_const:
            return Dim({(): self.const // d})
        if all(v % d == 0 for v in self.terms.values()):
            return Dim({k: v // d for k, v in self.terms.items()})
        raise ValueError(f"{self} is not divisible by {d}")

    def divides_by(self, d: int) -> bool:
        return d != 0 and all(v % d == 0 for v in self.terms.values())

    # comparison --------------------------------------------------------------------------------------------------
    def __eq__(self, o: object) -> bool:
        if isinstance(o, (int, str)) and not isinstance(o, bool):
            o = Dim.of(o)
        return isinstance(o, Dim) and self.terms == o.terms

    def __hash__(self) -> int:
        return self._hash

    def __setattr__(self, *_):
        raise AttributeError("Dim is immutable")

    def __copy__(self) -> "Dim":
        return self

    def __deepcopy__(self, memo) -> "Dim":      # immutable: a copied model or graph shares it
        return self

    def __reduce__(self):
        return (Dim, (dict(self.terms),))

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        # symbolic terms first (alphabetical), the constant last: "T+64", "B*F"
        for k in sorted(self.terms, key=lambda k: (k == (), k)):
            c = self.terms[k]
            body = "*".join(k)
            if k == ():
                s = str(abs(c))
            elif abs(c) == 1:
                s = body
            else:
                s = f"{abs(c)}*{body}"
            parts.append(("-" if c < 0 else "+", s))
        out = parts[0][1] if parts[0][0] == "+" else "-" + parts[0][1]
        for sign, s in parts[1:]:
            out += sign + s
        return out


DimLike = Union[Dim, int, str]


def parse_dim(text: str) -> Dim:
    """Parse `"B"`, `"T+64"`, `"2*T"`, `"B*F"`: sums of products of symbols and integers."""
    s = text.replace(" ", "")
    if not s:
        raise ValueError("empty dimension")
    if len(s) > 64:                             # parsing is quadratic in the factors; real ones are like "B*F+64"
        raise ValueError(f"dimension {text[:20]!r}... is {len(text):,} characters; write at most 64")
    total = Dim({})
    for i, chunk in enumerate(s.replace("-", "+-").split("+")):
        if chunk == "" and i == 0:
            continue
        neg = chunk.startswith("-")
        chunk = chunk[1:] if neg else chunk
        if not chunk:
            raise ValueError(f"bad dimension {text!r}")
        term = Dim({(): 1})
        for f in chunk.split("*"):
            if f.isdigit():
                term = term * int(f)
            elif f.isidentifier() and len(f) <= 8:
                term = term * Dim.sym(f)
            else:
                raise ValueError(f"bad dimension {text!r}: {f!r} is neither an integer nor a symbol")
        total = total - term if neg else total + term
    return total


def shape_str(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
