"""Work over a model's tensors done by a pool of threads, largest first, with progress (`progress.track`).

    for name, value in parallel(names, make, sizes, "initialising weights", n_threads): ...

`make(name)` runs in a worker thread, the largest tensors first; results come back as they finish (so one large
tensor never keeps the other threads waiting), and the caller installs them in one thread; by default at most 2 per
thread are started ahead of the caller (memory stays bounded). Worth it where `make` spends its time in kernels
that release the GIL (torch's random number generators and copies do): a model's tensors are independent, so the
pool fills them at once, and the order they finish in changes no value.
`Scratch` holds a buffer per thread, reused across the tensors of one job (values drawn only to be cast or copied
elsewhere then do not fault in fresh memory for every tensor).
"""
from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Optional, Sequence

from runtime_common.progress import track


def default_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                         # macOS, Windows
        return max(1, os.cpu_count() or 1)


def parallel(names: Sequence[str], make: Callable[[str], Any], sizes: Sequence[int], description: str,
             n_threads: Optional[int] = None, prepare: Optional[Callable[[str], None]] = None,
             ahead: Optional[int] = None) -> Iterator[tuple[str, Any]]:
    """(name, make(name)) for every name, computed by `n_threads` threads (default: one per core), largest first.
    `prepare(name)`, if given, runs in the caller's thread before `make(name)` is started (work a framework allows
    from one thread only, e.g. MLX allocating the array that `make` then fills); it runs while the pool works, as
    far ahead as `ahead` tasks started and not yet handed back (default 2 per thread: results that are temporaries
    stay few; pass len(names) when they are the final storage anyway)."""
    order = sorted(range(len(names)), key=lambda i: -sizes[i])
    ordered, weights = [names[i] for i in order], [sizes[i] for i in order]
    n = n_threads or default_threads()
    if n == 1 or len(names) < 2:
        for name in track(ordered, description, weights):
            if prepare is not None:
                prepare(name)
            yield name, make(name)
        return
    limit = max(1, ahead if ahead is not None else 2 * n)
    finished: queue.SimpleQueue = queue.SimpleQueue()      # futures, in the order they finish
    running: dict = {}
    todo = deque(ordered)
    with ThreadPoolExecutor(n) as pool:
        try:
            for _ in track(ordered, description, weights):
                future = None
                while future is None:          # hand back whatever finished first; meanwhile start more
                    try:
                        future = finished.get_nowait()
                    except queue.Empty:
                        if todo and len(running) < limit:
                            name = todo.popleft()
                            if prepare is not None:
                                prepare(name)
                            started = pool.submit(make, name)
                            running[started] = name
                            started.add_done_callback(finished.put)
                        else:
                            future = finished.get()
                yield running.pop(future), future.result()
        finally:
            for f in running:
                f.cancel()


class Scratch:
    """Per-thread reusable buffers: `get(n, alloc)` returns this thread's buffer, grown with `alloc(n)` when it
    holds fewer than n elements (1-D buffers: torch tensors, numpy arrays). Dropped with the object."""

    def __init__(self):
        self._bufs: dict[int, Any] = {}

    def get(self, n: int, alloc: Callable[[int], Any]):
        key = threading.get_ident()
        buf = self._bufs.get(key)
        if buf is None or buf.shape[0] < n:
            self._bufs[key] = None                 # free the small one first
            buf = self._bufs[key] = alloc(n)
        return buf[:n]
