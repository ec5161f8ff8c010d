"""Progress for long work (initialising multi-GB weights, writing them, exporting ONNX): a rich bar on a terminal,
plain lines in logs.

    for name in track(names, "initialising weights", weight=sizes): ...
    with status("writing model.safetensors (7.6 GB)", total_elements): ...
    with steps() as step: step("tracing (torch.export)"); ...

On a terminal, a bar or spinner when the work is large (over `MIN_ELEMENTS` elements). Without one (CI logs,
pipes), plain lines on stderr once the work has run `LOG_AFTER_S` seconds: `initialising weights: 40% (12 s)`, each
step's name, and `... done (31 s)`; so quick work (tests) stays quiet and slow work is never silent.
`OMNIC_PROGRESS=0` turns both off, `=1` forces the bar on a terminal whatever the size.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterable, Iterator, Optional, Sequence

MIN_ELEMENTS = 200_000_000      # about 0.8 GB of fp32: below this, initialising takes a few seconds at most
HEARTBEAT_S = 15.0              # off a terminal: a line this often while one stage runs
LOG_MIN_ELEMENTS = 20_000_000   # off a terminal: weights this large (80 MB in fp32) may take long enough to log
LOG_AFTER_S = 5.0               # off a terminal: lines only for work that has run this long


class _Log:
    """Plain progress lines on stderr (no terminal), once the work has run LOG_AFTER_S seconds."""

    def __init__(self, description: str):
        self.description, self.t0, self.said = description, time.perf_counter(), False
        self.on = os.environ.get("OMNIC_PROGRESS") != "0" and not sys.stderr.isatty()

    def say(self, text: str, force: bool = False) -> None:
        elapsed = time.perf_counter() - self.t0
        if self.on and (force or elapsed >= LOG_AFTER_S):
            print(f"{text} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
            self.said = True

    def done(self) -> None:
        if self.said:
            self.say(f"{self.description}: done", force=True)


def _wanted(total: int) -> bool:
    flag = os.environ.get("OMNIC_PROGRESS")
    if flag == "0" or not sys.stderr.isatty():
        return False
    return flag == "1" or total >= MIN_ELEMENTS


def track(items: Sequence[str], description: str, weight: Optional[Sequence[int]] = None) -> Iterator[str]:
    """Yield `items`, advancing a bar by each item's `weight` (e.g. its element count)."""
    sizes = list(weight) if weight is not None else [1] * len(items)
    if not _wanted(sum(sizes)):
        log, total, done, shown = _Log(description), max(1, sum(sizes)), 0, 0
        log.on = log.on and (weight is None or total >= LOG_MIN_ELEMENTS)
        for item, n in zip(items, sizes):
            yield item
            done += n
            if done * 10 // total > shown:            # each tenth, once the work is slow enough to mention
                shown = done * 10 // total
                log.say(f"{description}: {100 * done // total}%")
        log.done()
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
        log = _Log(description)
        log.on = log.on and total_elements >= LOG_MIN_ELEMENTS
        yield
        log.say(f"{description}: done")
        return
    with _console().status(description):
        yield


@contextlib.contextmanager
def steps(first: str = "working") -> Iterator:
    """`step(text)` names the stage a long job is in: a spinner with the elapsed time on a terminal, else a line
    per stage once the job has run LOG_AFTER_S seconds (ONNX export: tracing, writing, checking, comparing)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    console = Console(stderr=True)
    log = _Log(first)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True, disable=not console.is_terminal or os.environ.get("OMNIC_PROGRESS") == "0") as bar:
        task = bar.add_task(first, total=None)
        current = [first]
        stop = threading.Event()

        def step(text: str) -> None:
            current[0] = text
            bar.update(task, description=text)
            log.say(text)

        def heartbeat() -> None:          # a stage that runs for minutes (torch.export) is not silent in a log
            while not stop.wait(HEARTBEAT_S):
                log.say(f"{current[0]}: still working")

        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        try:
            yield step
        finally:
            stop.set()
            beat.join()
    log.done()


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
