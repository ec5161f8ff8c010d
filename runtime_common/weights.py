"""The framework-free part of loading weights, for either runtime's `weights.py`: the error that lists every problem
at once (`WeightsMismatch`), what a non-strict load returns (`LoadResult`), and the renaming of checkpoint names by
data (`map_names`: a list of (regex, replacement) rules, applied in order with `re.sub`; a replacement of None
drops the tensor).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence


class WeightsMismatch(ValueError):
    """Every reason a set of tensors does not fit a model, one line per tensor."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], shapes: list[str],
                 dtypes: list[str], other: list[str]):
        self.missing, self.unexpected, self.shapes, self.dtypes, self.other = missing, unexpected, shapes, dtypes, other
        n = sum(map(len, (missing, unexpected, shapes, dtypes, other)))
        lines = [f"cannot load {source}: {n} problem{'s' if n != 1 else ''}"]
        for title, items in (("missing from the checkpoint", missing), ("unexpected (not in the model)", unexpected),
                             ("wrong shape", shapes), ("wrong dtype (pass cast=True to convert)", dtypes),
                             ("other", other)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {s}" for s in items]
        super().__init__("\n".join(lines))


@dataclass
class LoadResult:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def map_names(names: Iterable[str], mapping: Sequence[tuple[str, Optional[str]]]) -> tuple[dict[str, str], list[str]]:
    """Rename checkpoint names by `mapping`: ({model name: checkpoint name}, [collision messages])."""
    rules = [(re.compile(p), r) for p, r in mapping]
    out: dict[str, str] = {}
    clashes: list[str] = []
    for name in names:
        new: Optional[str] = name
        for pat, repl in rules:
            if repl is None:
                if pat.search(new):
                    new = None
                    break
            else:
                new = pat.sub(repl, new)
        if new is None:
            continue
        if new in out:
            clashes.append(f"{out[new]} and {name} both map to {new}")
            continue
        out[new] = name
    return out, clashes


def label(name: str, origin: str) -> str:
    """A model tensor's name in messages, with its checkpoint name when that differs."""
    return name if origin == name else f"{name} (checkpoint {origin})"
