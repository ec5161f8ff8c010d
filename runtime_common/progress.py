"""Progress for long work (initialising multi-GB weights, writing them): a rich bar on a terminal, nothing otherwise.

    for name in track(names, "initialising weights", weight=sizes): ...
    with status("writing model.safetensors (7.6 GB)"): ...

Shown only when stderr is a terminal and the work is large (over `MIN_ELEMENTS` elements), so tests, pipes and CI
logs stay quiet; `OMNIC_PROGRESS=0` turns it off, `=1` forces it on a terminal whatever the size.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, Optional, Sequence

MIN_ELEMENTS = 200_000_000      # about 0.8 GB of fp32: below this, initialising takes a few seconds at most


def _wanted(total: int) -> bool:
    flag = os.environ.get("OMNIC_PROGRESS")
    if flag == "0" or not sys.stderr.isatty():
        return False
    return flag == "1" or total >= MIN_ELEMENTS


def track(items: Sequence[str], description: str, weight: Optional[Sequence[int]] = None) -> Iterator[str]:
    """Yield `items`, advancing a bar by each item's `weight` (e.g. its element count)."""
    sizes = list(weight) if weight is not None else [1] * len(items)
    if not _wanted(sum(sizes)):
        yield from items
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), transient=True, console=_console()) as bar:
        task = bar.add_task(description, total=sum(sizes))
        for item, n in zip(items, sizes):
            yield item
            bar.advance(task, n)


@contextlib.contextmanager
def status(description: str, total_elements: int) -> Iterator[None]:
    """A spinner with `description` while the block runs (for work without steps, e.g. one file write)."""
    if not _wanted(total_elements):
        yield
        return
    with _console().status(description):
        yield


def _console():
    from rich.console import Console
    return Console(stderr=True)


def sizes_of(shapes: Iterable[Sequence[int]]) -> list[int]:
    out = []
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        out.append(n)
    return out
