"""A safetensors file written in place: its header first, then each tensor's bytes filled through a memory map.

    with MappedFile(path, {name: ("F32", shape), ...}, {"format": "pt"}) as f:
        f.buffer, f.offset(name), f.nbytes(name)     # a writable view of the file's data; where each tensor lies

A seeded build that writes its weights (`omnic build --weights`) can draw each tensor straight into the file's pages:
no model in memory beside the file, and no second copy of every byte through write() (on the 2-core development VM,
drawing Oculus's 7.6 GB into a map took 13-15 s where drawing it into memory and then `save_file` took 31-35 s).
The layout is the one `safetensors.serialize_file` writes (https://github.com/huggingface/safetensors#format):
an 8-byte little-endian header length, the header (compact JSON: "__metadata__" first, then each tensor's dtype,
shape and data_offsets, in name order) padded with spaces to a multiple of 8, then the tensors' bytes in the same
order. The file's blocks are reserved first (posix_fallocate): a full disk is an OSError, not a SIGBUS from the
map. safetensors orders tensors of several dtypes by dtype first (its own enum order), so a file is mapped only
when every tensor has one dtype (`layout` returns None otherwise, and the caller writes the plain way);
tests/test_seeded_file.py checks the files byte for byte against `save_file`'s. Framework-free.
"""
from __future__ import annotations

import errno
import json
import math
import mmap
import os
import struct
from typing import Optional, Sequence

from runtime_common.checkpoint import ITEMSIZE


def layout(tensors: dict[str, tuple[str, Sequence[int]]],
           metadata: Optional[dict[str, str]] = None) -> Optional[tuple[bytes, dict[str, tuple[int, int]]]]:
    """(the header bytes, {name: (start, end) of its data after the header}) of a file holding `tensors` ({name:
    (safetensors dtype, shape)}), as safetensors writes it; None when the tensors have more than one dtype."""
    if len({dtype for dtype, _ in tensors.values()}) > 1:
        return None
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    spans, offset = {}, 0
    for name in sorted(tensors):
        dtype, shape = tensors[name]
        n = math.prod(shape) * ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + n]}
        spans[name] = (offset, offset + n)
        offset += n
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return text + b" " * (-len(text) % 8), spans


class MappedFile:
    """The file at `path` (created or truncated) with its header written and its data mapped for writing
    (`buffer`); closed (the map released, the file complete) on leaving the `with` block. Raises ValueError for
    tensors of several dtypes (see `layout`)."""

    def __init__(self, path: str | os.PathLike, tensors: dict[str, tuple[str, Sequence[int]]],
                 metadata: Optional[dict[str, str]] = None):
        planned = layout(tensors, metadata)
        if planned is None:
            raise ValueError("a mapped safetensors file holds tensors of one dtype")
        header, self.spans = planned
        self.base = 8 + len(header)
        size = self.base + max((end for _, end in self.spans.values()), default=0)
        self._file = open(path, "wb+")
        try:
            self._file.write(struct.pack("<Q", len(header)) + header)
            self._file.truncate(size)
            _reserve(self._file, path, size)
            self._map = mmap.mmap(self._file.fileno(), size) if size > self.base else None
        except BaseException:
            self._file.close()
            raise
        self.buffer = self._map

    def offset(self, name: str) -> int:
        """Where tensor `name`'s bytes start in `buffer`."""
        return self.base + self.spans[name][0]

    def nbytes(self, name: str) -> int:
        start, end = self.spans[name]
        return end - start

    def close(self) -> None:
        self.buffer = None
        try:
            if self._map is not None:
                self._map.close()          # every view of it must be gone (BufferError otherwise)
                self._map = None
        finally:
            self._file.close()

    def __enter__(self) -> "MappedFile":
        return self

    def __exit__(self, kind, *_) -> None:
        try:
            self.close()
        except BufferError:                # views still held by an error's traceback: the map goes with them
            if kind is None:
                raise


def _reserve(file, path, size: int) -> None:
    """Reserve the file's blocks now: a full disk is then an OSError here, not a SIGBUS when a page of the map is
    written back. A filesystem that cannot reserve (no fallocate) is written as it is."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(file.fileno(), 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, f"no space for {os.fspath(path)} ({size:,} bytes): {e.strerror}") from None
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
