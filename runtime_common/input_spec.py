"""What a compiled model's inputs must be, and the check of a call's inputs against it, for either runtime.

    specs = describe(graph)          # [InputSpec]: name, kind, shape (B, T, F symbols or numbers), dtype, vocabulary,
                                     #   and requirements such as image placeholder tokens (MergeImageTokens)
    check(specs, inputs)             # at model entry: a ValueError naming the input, the expected and the given value

The check runs once per call of the model, before any op: a wrong image size, frame count, number of channels, rank
or dtype (token ids must be integers, images floating point), symbols bound inconsistently (two inputs with different
batch sizes), or an example whose ids lack the image placeholder tokens a MergeImageTokens node will replace, each
gets one message that names what was expected, instead of a framework error from deep inside an op. Tensors of either
runtime work: only `.shape`, `.dtype` and `==` / `.sum()` are used.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from compiler.dims import Dim, shape_str
from compiler.ir import Graph

SYMBOL_NAMES = {"B": "batch", "T": "text length", "F": "frame count"}


@dataclass(frozen=True)
class Placeholders:
    """Each example's ids must hold `count` tokens of id `token_id` (replaced by image tokens in `node`)."""
    token_id: int
    count: int
    node: str


@dataclass(frozen=True)
class InputSpec:
    name: str
    kind: str                               # image, video, ids, tokens, vector, scalar
    shape: tuple[Dim, ...]
    dtype: str                              # "int" or "float"
    vocab: Optional[int] = None             # ids: the smallest vocabulary that reads them
    placeholders: tuple[Placeholders, ...] = field(default_factory=tuple)
    note: str = ""

    def describe(self) -> str:
        """`input_ids: ids (B, T) int, ids < 49280; each example holds 64 tokens of id 49152 (image placeholders)`."""
        text = f"{self.name}: {self.kind} {shape_str(self.shape)} {self.dtype}"
        if self.vocab:
            text += f", ids < {self.vocab}"
        for p in self.placeholders:
            text += f"; each example holds {p.count} tokens of id {p.token_id} (image placeholders for {p.node})"
        return text


def _vocab(graph: Graph, name: str) -> Optional[int]:
    sizes = []
    for c in graph.consumers(name):
        p = graph[c].params
        for v in (getattr(p, "num_embeddings", None), getattr(getattr(p, "llm", None), "vocab_size", None)):
            if isinstance(v, int):
                sizes.append(v)
    return min(sizes) if sizes else None


def describe(graph: Graph) -> list[InputSpec]:
    """The model's inputs in graph order, with what each must hold."""
    out = []
    for node in graph.nodes():
        if node.op != "Input" or not node.outputs:
            continue
        t = node.out
        ph = []
        for m in graph.nodes():
            if m.op == "MergeImageTokens" and len(m.inputs) == 3 and m.inputs[2][0] == node.name:
                img = graph[m.inputs[1][0]].outputs.get(m.inputs[1][1])
                if img is not None and img.shape[1].is_const:
                    ph.append(Placeholders(m.params.image_token_id, img.shape[1].const, m.name))
        out.append(InputSpec(node.name, t.kind, tuple(t.shape), t.dtype,
                             _vocab(graph, node.name) if t.kind == "ids" else None, tuple(ph), node.label or ""))
    return out


def _is_int(dtype: Any) -> bool:
    s = str(dtype).lower()
    return "int" in s or "bool" in s


def check(specs: list[InputSpec], inputs: Mapping[str, Any]) -> None:
    """Raise ValueError for the first input that does not fit; bind B / T / F from the inputs as they come. Skipped
    while torch traces the model (torch.compile, torch.export, ONNX export): shapes are symbolic there."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.compiler.is_compiling():
        return
    env: dict[str, int] = {}
    where: dict[str, str] = {}
    for s in specs:
        x = inputs.get(s.name)
        if x is None or not hasattr(x, "shape"):
            continue                         # names are checked by the plan (missing / unexpected inputs)
        got = tuple(int(d) for d in x.shape)
        want = shape_str(s.shape)
        if len(got) != len(s.shape):
            raise ValueError(f"input {s.name!r} has shape {got}, but the spec expects {want} (a {s.kind}, "
                             f"{len(s.shape)} dimensions)")
        for k, (d, g) in enumerate(zip(s.shape, got)):
            syms = d.symbols()
            if not syms:
                if g != d.const:
                    raise ValueError(f"input {s.name!r} has shape {got}, but the spec expects {want}: "
                                     f"{_axis(s.kind, k, len(s.shape))} {d.const}, not {g}" + _size_hint(s.kind))
            elif len(syms) == 1 and d == Dim.sym(next(iter(syms))):
                sym = next(iter(syms))
                if sym in env and env[sym] != g:
                    raise ValueError(f"input {s.name!r}: its {SYMBOL_NAMES.get(sym, sym)} {sym} is {g}, but "
                                     f"{where[sym]} has {sym} = {env[sym]} (shape {got}; the model takes {want})")
                env.setdefault(sym, g)
                where.setdefault(sym, repr(s.name))
        for k, (d, g) in enumerate(zip(s.shape, got)):       # derived sizes (2*T, ...) once the symbols are bound
            if d.symbols() and d.symbols() <= env.keys() and d.eval(env) != g:
                raise ValueError(f"input {s.name!r}: dimension {k} must be {d} = {d.eval(env)}, got {g}")
        if s.dtype == "int" and not _is_int(x.dtype):
            raise ValueError(f"input {s.name!r}: token ids must be integers, got dtype {x.dtype}")
        if s.dtype == "float" and _is_int(x.dtype):
            raise ValueError(f"input {s.name!r}: expected floating-point values, got dtype {x.dtype} "
                             "(convert it, e.g. image / 255.0)")
        for p in s.placeholders:            # in total, as the op replaces them in row-major order
            n = int((x == p.token_id).sum().item())
            if n != p.count * got[0]:
                raise ValueError(f"input {s.name!r} holds {n} placeholder tokens of id {p.token_id}; {p.node} needs "
                                 f"{p.count} per example ({p.count * got[0]} for a batch of {got[0]}), one per image "
                                 f"token: put {p.count} tokens of id {p.token_id} where the image goes")


def _axis(kind: str, k: int, rank: int) -> str:
    names = {"image": ["batch", "channels", "height", "width"],
             "video": ["batch", "frame count", "channels", "height", "width"],
             "tokens": ["batch", "length", "width"], "vector": ["batch", "width"]}.get(kind)
    return (names[k] if names and k < len(names) else f"dimension {k}") if rank else f"dimension {k}"


def _size_hint(kind: str) -> str:
    if kind in ("image", "video"):
        return ("; the spec's image size is fixed when it is compiled: compile it at this size (its input shape, "
                "e.g. `--set inputs[0].shape=[...]`), and vision towers resize their position tables as their "
                "family does")
    return "; compile the spec with these sizes"
