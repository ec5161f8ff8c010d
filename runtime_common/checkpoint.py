"""Checkpoints as other code writes them, for either runtime: find the files, read their headers, run a key map.

  files_of(path)                 the safetensors files of a file or folder: model.safetensors, the shards that
                                 model.safetensors.index.json lists, or the folder's *.safetensors
  read_headers(files)            {name: Ref} from the files' headers (8-byte length + JSON): dtype, shape, byte
                                 range; no tensor data is read
  plan(sources, rules, shapes)   runs a key map (compiler/importers/keymaps.py: renames, Merge, Split) over the
                                 names: {model name: Source} and the problems (collisions, incomplete expert sets,
                                 splits that do not divide), before any data is read
  tensor_bytes(ref)              one tensor's bytes as a numpy view of a private memory map of its file
  materialise(source, fw)        one model tensor, read and assembled with the runtime's `fw` (read / cat / stack
                                 / narrow); the runtimes read tensor by tensor (MLX evaluates groups of a few hundred
                                 MB), so a load holds the model and one tensor or group at a time, never the whole
                                 file twice (tests/test_checkpoints.py measures it)
A Source is a Ref (a tensor of a file, or an in-memory tensor), a Cat (parts along dim 0), a Stack (experts) or a
Part (a chunk of a Split). Each knows its shape, dtype (safetensors' names: F32, BF16, ...) and the checkpoint names
it comes from, for the strict report (runtime_common/weights.py: `WeightsMismatch`).
Framework-free (numpy, imported where a tensor is read).
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# safetensors dtype -> numpy dtype of the same width (bf16 and fp8 carried as unsigned ints)
NUMPY = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "uint16", "I64": "int64", "I32": "int32",
         "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "uint8", "F8_E5M2": "uint8"}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "F8_E4M3": 1, "F8_E5M2": 1}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (no files, a broken header or index); the message names the file."""


@dataclass(eq=False)
class Ref:
    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Optional[str] = None          # a tensor of a file (byte range start:end after the header) ...
    start: int = 0
    end: int = 0
    value: Any = None                   # ... or an in-memory tensor / array

    @property
    def origin(self) -> str:
        return self.name


@dataclass(eq=False)
class _Joined:
    """Tensors of one checkpoint read as one: shape from `_shape`, dtype the first part's."""
    parts: list
    shape: tuple[int, ...] = ()
    dtype: str = ""

    def __post_init__(self):
        self.shape, self.dtype = self._shape(), self.parts[0].dtype


class Cat(_Joined):
    """Parts concatenated along dim 0 (gate | up)."""

    def _shape(self) -> tuple[int, ...]:
        return (sum(p.shape[0] for p in self.parts), *self.parts[0].shape[1:])

    @property
    def origin(self) -> str:
        return " + ".join(p.origin for p in self.parts)


class Stack(_Joined):
    """Parts stacked on a new dim 0 (per-expert tensors)."""

    def _shape(self) -> tuple[int, ...]:
        return (len(self.parts), *self.parts[0].shape)

    @property
    def origin(self) -> str:
        return f"{self.parts[0].origin} ... ({len(self.parts)} experts)"


@dataclass(eq=False)
class Part:
    source: Any
    dim: int
    index: int
    count: int
    start: int = 0
    shape: tuple[int, ...] = ()
    siblings: list = field(default_factory=list)

    @property
    def dtype(self) -> str:
        return self.source.dtype

    @property
    def origin(self) -> str:
        return f"{self.source.origin} [chunk {self.index + 1} of {self.count}]"


Source = Union[Ref, Cat, Stack, Part]


# --- files -----------------------------------------------------------------------------------------------------------
def files_of(path: Union[str, os.PathLike]) -> list[str]:
    """The safetensors files of `path` (a file, or a folder holding model.safetensors, an index, or shards)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if path.endswith(".json"):
            return _index_files(path)
        return [path]
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such file or folder")
    if os.path.isfile(os.path.join(path, INDEX)):
        return _index_files(os.path.join(path, INDEX))
    if os.path.isfile(os.path.join(path, SINGLE)):
        return [os.path.join(path, SINGLE)]
    found = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if found:
        return found
    pickles = sorted(os.path.basename(p) for p in glob.glob(os.path.join(path, "*.bin")) +
                     glob.glob(os.path.join(path, "*.pt")) + glob.glob(os.path.join(path, "*.pth")))
    hint = (f" (found {', '.join(pickles)}: pickle files are not read, since loading them runs code; convert them "
            "to safetensors with the tool that wrote them)") if pickles else ""
    raise CheckpointError(f"{path}: no {SINGLE}, {INDEX} or *.safetensors{hint}")


def _index_files(index: str) -> list[str]:
    try:
        with open(index, encoding="utf-8") as f:
            wm = json.load(f)["weight_map"]
        shards = sorted(set(wm.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a safetensors index (a JSON object with a weight_map): {e}")
    folder = os.path.dirname(index)
    files = [os.path.join(folder, s) for s in shards]
    absent = [s for s, f in zip(shards, files) if not os.path.isfile(f)]
    if absent:
        raise CheckpointError(f"{index}: shards listed in the weight_map are missing: {', '.join(absent)}")
    return files


def read_header(file: str) -> dict[str, Ref]:
    """{name: Ref} of one safetensors file, from its header alone."""
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(f.read(n))
        size = os.path.getsize(file)
    except (OSError, ValueError, struct.error) as e:
        raise CheckpointError(f"{file}: not a safetensors file ({e})")
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (s, e) = meta["dtype"], tuple(int(d) for d in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{file}: tensor {name!r} has a broken header entry ({err})")
        if dtype not in NUMPY or base + e > size or e - s != math.prod(shape) * ITEMSIZE[dtype]:
            raise CheckpointError(f"{file}: tensor {name!r} ({dtype} {list(shape)}) does not fit its byte range")
        out[name] = Ref(name, shape, dtype, file, base + s, base + e)
    return out


def read_headers(files: Sequence[str]) -> dict[str, Ref]:
    """{name: Ref} over all shards; a name stored in two shards is an error naming both."""
    out: dict[str, Ref] = {}
    for file in files:
        for name, ref in read_header(file).items():
            if name in out:
                raise CheckpointError(f"tensor {name!r} is stored twice: in {out[name].file} and {file}")
            out[name] = ref
    return out


def tensor_bytes(ref: Ref):
    """The tensor's data as a read-only-in-effect numpy array (copy-on-write map of its byte range), in NUMPY's
    dtype for its safetensors dtype; the map is released when the array is."""
    import numpy as np
    dt = np.dtype(NUMPY[ref.dtype])
    if ref.end == ref.start:
        return np.zeros(ref.shape, dt)
    return np.memmap(ref.file, dtype=dt, mode="c", offset=ref.start, shape=ref.shape)


# --- the key map -----------------------------------------------------------------------------------------------------
def plan(sources: dict[str, Source], rules: Sequence, shapes: dict[str, tuple[int, ...]]
         ) -> tuple[dict[str, Source], list[str]]:
    """Run `rules` (see compiler/importers/keymaps.py) over {checkpoint name: Source}; `shapes` are the model's
    (to size Split chunks). Returns ({model name: Source}, [problems])."""
    from compiler.importers.keymaps import Merge, Split, Tied
    cur = dict(sources)
    problems: list[str] = []
    for rule in rules:
        if isinstance(rule, Merge):
            cur = _merge(cur, rule, problems)
        elif isinstance(rule, Split):
            cur = _split(cur, rule)
        elif isinstance(rule, Tied):
            copy = cur.pop(rule.name, None)
            if copy is not None and rule.target not in cur:
                cur[rule.target] = copy
        else:
            pat, repl = rule
            cur = _rename(cur, re.compile(pat), repl, problems)
    for name, src in cur.items():
        if isinstance(src, Part) and not src.shape:
            _size_split(src, cur, shapes, problems)
    return cur, problems


def _rename(cur: dict, pat: re.Pattern, repl: Optional[str], problems: list[str]) -> dict:
    out: dict = {}
    for name, src in cur.items():
        if repl is None:
            if not pat.search(name):
                out[name] = src
            continue
        new = pat.sub(repl, name)
        if new in out:
            problems.append(f"{out[new].origin} and {src.origin} both map to {new}")
            continue
        out[new] = src
    return out


def _merge(cur: dict, rule, problems: list[str]) -> dict:
    pat = re.compile(rule.pattern)
    groups: dict[str, dict] = {}
    out: dict = {}
    for name, src in cur.items():
        m = pat.match(name)
        if not m:
            out[name] = src
            continue
        target = m.expand(rule.target)
        if rule.experts:
            groups.setdefault(target, {})[(int(m.group(2)), m.group(3))] = src
        else:
            groups.setdefault(target, {})[(0, m.group(2))] = src
    for target, parts in groups.items():
        n = 1 + max(e for e, _ in parts)
        lacking = [f"{e}.{p}" for e in range(n) for p in rule.parts if (e, p) not in parts]
        if lacking:
            problems.append(f"{target}: the checkpoint lacks experts/parts {', '.join(lacking)} "
                            f"(found {len(parts)} of {n * len(rule.parts)})")
            continue
        cats = []
        for e in range(n):
            ps = [parts[(e, p)] for p in rule.parts]
            shapes = {p.shape[1:] for p in ps}
            if len(shapes) > 1 or len({p.dtype for p in ps}) > 1:
                problems.append(f"{target}: parts {', '.join(p.origin for p in ps)} differ in shape or dtype")
                break
            cats.append(ps[0] if len(ps) == 1 else Cat(ps))
        else:
            if rule.experts and len({c.shape for c in cats}) > 1:
                problems.append(f"{target}: experts differ in shape")
                continue
            if target in out:
                problems.append(f"{out[target].origin} and the merged {target} both map to {target}")
                continue
            out[target] = Stack(cats) if rule.experts else cats[0]
    return out


def _split(cur: dict, rule) -> dict:
    pat = re.compile(rule.pattern)
    out: dict = {}
    for name, src in cur.items():
        m = pat.match(name)
        if not m:
            out[name] = src
            continue
        siblings: list = []
        for i, t in enumerate(rule.targets):
            part = Part(src, rule.dim, i, len(rule.targets), siblings=siblings)
            siblings.append(part)
            out[m.expand(t)] = part
    return out


def _size_split(part: Part, cur: dict, shapes: dict, problems: list[str]) -> None:
    """Chunk sizes of a split: the model's sizes of the names its parts became, else equal chunks."""
    sibs = part.siblings
    names = {id(s): n for n, s in cur.items() if isinstance(s, Part) and s.siblings is sibs}
    src, dim = part.source, part.dim
    want = [shapes.get(names.get(id(s), ""), None) for s in sibs]
    if all(w is not None and len(w) == len(src.shape) for w in want) and sum(w[dim] for w in want) == src.shape[dim]:
        sizes = [w[dim] for w in want]
    elif src.shape[dim] % len(sibs) == 0:
        sizes = [src.shape[dim] // len(sibs)] * len(sibs)
    else:
        problems.append(f"{src.origin}: {src.shape[dim]} rows do not split into {len(sibs)} parts")
        sizes = [0] * len(sibs)
    start = 0
    for s, n in zip(sibs, sizes):
        s.start, s.shape = start, tuple(n if d == dim else x for d, x in enumerate(src.shape))
        start += n


# --- reading ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Framework:
    """How a runtime reads and assembles tensors: read(Ref) -> an owned tensor/array (the Ref's own dtype),
    cat(list) along dim 0, stack(list) on a new dim 0, narrow(x, dim, start, length)."""
    read: Callable[[Ref], Any]
    cat: Callable[[list], Any]
    stack: Callable[[list], Any]
    narrow: Callable[[Any, int, int, int], Any]


def materialise(src: Source, fw: Framework):
    if isinstance(src, Ref):
        return fw.read(src)
    if isinstance(src, Cat):
        return fw.cat([materialise(p, fw) for p in src.parts])
    if isinstance(src, Stack):
        return fw.stack([materialise(p, fw) for p in src.parts])
    return fw.narrow(materialise(src.source, fw), src.dim, src.start, src.shape[src.dim])


def sources_of(path: Union[str, os.PathLike]) -> dict[str, Ref]:
    """{name: Ref} of every tensor of a checkpoint file or folder."""
    return read_headers(files_of(path))
