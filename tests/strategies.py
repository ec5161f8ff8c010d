"""Hypothesis strategies: random valid specs from a grammar over the compiler's ops, JSON values, and mutations.

`specs()` draws a model as a walk over tensor types: it starts from an input (token ids, tokens, an image or a
vector) and appends layers that accept the current type, with consistent random dimensions, so every draw is a
spec the compiler must accept. Each layer records the type its output must have (`Drawn.expected`), an oracle for
shape inference. A draw varies what the compiler infers: widths given or left out, `inputs` written or left to
wiring inference, model inputs declared or implied, branches back to earlier layers (then `inputs` are explicit,
so no join is inferred), sequence concatenations, stacks (`depth`, `repeat`).

Ops are used only if registered, so the grammar follows the registry as ops come and go. Examples per test:
`examples(n)` is n, or 100 n under HYPOTHESIS_PROFILE=long (see docs/fuzzing.md).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from compiler import registry

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(n: int) -> int:
    return n * 100 if LONG else n


def fast(n: int):
    """The settings of one property: `examples(n)` draws, no deadline (a cold import is slow). The default run (CI)
    draws the same examples every time (derandomize) and writes no database, so a CI result does not depend on
    chance; the long run draws anew each time and keeps failures in .hypothesis/ to replay them."""
    return settings(max_examples=examples(n), deadline=None, database=settings().database if LONG else None,
                    derandomize=not LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


OPS = set(registry.all_ops())


def has(*ops: str) -> bool:
    return all(o in OPS for o in ops)


# --- the type a generated layer must produce --------------------------------------------------------------------------
@dataclass(frozen=True)
class Ty:
    kind: str                                   # ids | tokens | image | vector
    width: Optional[int] = None                 # D, or channels C of an image
    hw: Optional[tuple[int, int]] = None        # image height, width
    grid: Optional[tuple[int, int]] = None      # tokens on a patch grid (h, w), after `prefix` CLS/register tokens
    prefix: int = 0


@dataclass
class Drawn:
    spec: dict
    expected: dict[str, Ty] = field(default_factory=dict)   # layer id -> type of its output
    stacks: dict[str, str] = field(default_factory=dict)    # layer id -> "depth" | "repeat": what shrinks


def divisors(n: int, most: int = 8) -> list[int]:
    return [d for d in range(1, min(n, most) + 1) if n % d == 0]


widths = st.integers(1, 48)
notes = st.one_of(st.none(), st.text(max_size=12))


# --- one layer per op: params drawn consistent with the input type ----------------------------------------------------
def _note(draw, params: dict) -> dict:
    n = draw(notes)
    if n is not None:
        params["note"] = n
    return params


def linear(draw, t: Ty):
    out = draw(widths)
    p = {"out_features": out}
    if draw(st.booleans()):
        p["in_features"] = t.width
    if draw(st.booleans()):
        p["bias"] = draw(st.booleans())
    return "Linear", _note(draw, p), replace(t, width=out)


def norm(draw, t: Ty):
    op = draw(st.sampled_from(["LayerNorm", "RMSNorm"]))
    p: dict[str, Any] = {}
    if draw(st.booleans()):
        p["dim"] = t.width
    if draw(st.booleans()):
        p["eps"] = draw(st.sampled_from([1e-5, 1e-6, 0.001]))
    return op, _note(draw, p), t


def activation(draw, t: Ty):
    fn = draw(st.sampled_from(["gelu", "gelu_tanh", "silu", "relu", "tanh", "sigmoid", "identity"]))
    return "Activation", _note(draw, {"fn": fn}), t


def block(draw, t: Ty):
    D = t.width
    heads = draw(st.sampled_from(divisors(D)))
    kv = draw(st.sampled_from(divisors(heads)))
    hd = D // heads
    p: dict[str, Any] = {"num_heads": heads, "num_kv_heads": kv, "ff_dim": draw(st.integers(1, 64))}
    if draw(st.booleans()):
        p["embed_dim"] = D
    p["mlp"] = draw(st.sampled_from(["gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu", "geglu_tanh"]))
    p["norm"] = draw(st.sampled_from(["layernorm", "rmsnorm"]))
    p["causal"] = draw(st.booleans())
    if hd % 2 == 0 and draw(st.booleans()):
        p["rope"] = "1d"
    if draw(st.booleans()):
        p["attn_bias"] = draw(st.lists(st.sampled_from(["q", "k", "v", "o"]), unique=True))
    if draw(st.booleans()):
        p["qk_norm"] = True
    if draw(st.booleans()):
        p["depth"] = draw(st.integers(1, 3))
    return "TransformerBlock", _note(draw, p), t


def moe(draw, t: Ty):
    D = t.width
    heads = draw(st.sampled_from([h for h in divisors(D) if (D // h) % 2 == 0] or [1]))
    hd = D // heads
    p: dict[str, Any] = {"type": "GQA_MoE_Layer", "num_heads": heads,
                         "num_kv_heads": draw(st.sampled_from(divisors(heads))),
                         "num_experts": draw(st.integers(1, 4)), "expert_dim": draw(st.integers(1, 32))}
    p["top_k"] = draw(st.integers(1, p["num_experts"]))
    if hd % 2:
        p["rope"] = "none"
    if draw(st.booleans()):
        p["depth"] = draw(st.integers(1, 2))
    return "TransformerBlock", _note(draw, p), t


def classification(draw, t: Ty):
    n = draw(st.integers(1, 16))
    return "ClassificationHead", _note(draw, {"num_classes": n}), Ty("vector", n)


def select_patches(draw, t: Ty):
    return "Select", {"tokens": "patches"}, replace(t, prefix=0)


def pixel_shuffle(draw, t: Ty):
    h, w = t.grid
    s = draw(st.sampled_from([f for f in (1, 2, 3, 4) if h % f == 0 and w % f == 0]))
    return "PixelShuffle", {"factor": s}, Ty("tokens", t.width * s * s, grid=(h // s, w // s))


def grid_resample(draw, t: Ty):
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    p = {"size": list(size), "mode": draw(st.sampled_from(["bilinear", "area"]))}
    return "GridResample", p, replace(t, grid=size)


def reshape_map(draw, t: Ty):
    return "Reshape", {"to": "map"}, Ty("image", t.width, t.grid)


def embedding(draw, t: Ty):
    V, D = draw(st.integers(1, 100)), draw(widths)
    return "Embedding", _note(draw, {"num_embeddings": V, "embedding_dim": D}), Ty("tokens", D)


def decoder_lm(draw, t: Ty):
    heads = draw(st.integers(1, 4))
    D = heads * draw(st.sampled_from([2, 4, 8]))
    V = draw(st.integers(2, 100))
    p = {"vocab_size": V, "hidden": D, "layers": draw(st.integers(1, 2)), "heads": heads,
         "ff_dim": draw(st.integers(1, 32))}
    return "DecoderLM", p, Ty("tokens", V)


def conv(draw, t: Ty):
    C, (H, W) = t.width, t.hw
    k = draw(st.integers(1, min(H, W, 5)))
    s = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    out = draw(st.integers(1, 16))
    p: dict[str, Any] = {"out_channels": out, "kernel_size": k, "stride": s, "padding": pad}
    if draw(st.booleans()):
        p["in_channels"] = C
    H2, W2 = (H + 2 * pad - k) // s + 1, (W + 2 * pad - k) // s + 1
    return "Conv2d", _note(draw, p), Ty("image", out, (H2, W2))


def patch_embed(draw, t: Ty):
    C, (H, W) = t.width, t.hw
    P = draw(st.integers(1, min(H, W, 8)))
    D = draw(widths)
    p: dict[str, Any] = {"embed_dim": D, "patch_size": P}
    if draw(st.booleans()):
        p["in_channels"] = C
    prefix = 0
    if draw(st.booleans()):
        p["cls_token"] = True
        prefix = 1
        if draw(st.booleans()):
            p["registers"] = draw(st.integers(1, 4))
            prefix += p["registers"]
    return "PatchEmbed", p, Ty("tokens", D, grid=(H // P, W // P), prefix=prefix)


def flatten(draw, t: Ty):
    return "Flatten", {}, Ty("tokens", t.width, grid=t.hw)


def choices(t: Ty) -> list:
    """The layers that accept a `t` (only registered ops), repeated to weight the draw."""
    if t.kind == "ids":
        return [f for f, ops in ((embedding, ("Embedding",)), (decoder_lm, ("DecoderLM",))) if has(*ops)]
    if t.kind == "image":
        out = [conv, activation, flatten]
        if has("PatchEmbed"):
            out.append(patch_embed)
        return out
    out = [linear, linear, norm, activation]
    if t.kind == "tokens":
        out += [block] * 3
        if has("GQA_MoE_Layer"):
            out += [moe] * 2
    if has("ClassificationHead") and t.kind == "tokens":
        out.append(classification)                  # rarely: after it the walk stays on vectors
    if t.grid is not None:                          # tokens from a patch grid: weighted up, grids are rarer
        if t.prefix and has("Select"):
            out += [select_patches] * 3
        if has("GridResample"):
            out += [grid_resample] * 2
        if not t.prefix:
            out += [f for f, op in ((pixel_shuffle, "PixelShuffle"), (reshape_map, "Reshape")) if has(op)] * 3
    return out


def input_decl(draw, kind: str) -> tuple[dict, Ty]:
    if kind == "ids":
        return {"name": "x", "kind": "ids", "shape": ["B", "T"]}, Ty("ids")
    if kind == "tokens":
        D = draw(widths)
        return {"name": "x", "kind": "tokens", "shape": ["B", "T", D]}, Ty("tokens", D)
    if kind == "vector":
        D = draw(widths)
        return {"name": "x", "kind": "vector", "shape": ["B", D]}, Ty("vector", D)
    C, H, W = draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    return {"name": "x", "kind": "image", "shape": ["B", C, H, W]}, Ty("image", C, (H, W))


@st.composite
def specs(draw, max_layers: int = 8) -> Drawn:
    """A valid spec and the output type of each of its layers."""
    start = draw(st.sampled_from(["ids", "tokens", "image", "vector"]))
    declare = start in ("tokens", "vector") or draw(st.integers(0, 4)) > 0
    if declare:
        decl, t = input_decl(draw, start)
    elif start == "ids":
        decl, t = None, Ty("ids")                                   # implied: input_ids (B, T)
    else:
        decl, t = None, None                                        # implied by the first layer: (B, C, 224, 224)
    spec: dict[str, Any] = {"name": draw(st.text(min_size=1, max_size=10))}
    if draw(st.booleans()):
        spec["context"] = draw(st.integers(1, 64))
    if draw(st.booleans()):
        spec["batch"] = draw(st.integers(1, 4))
    if decl:
        spec["inputs"] = [decl]
    drawn = Drawn(spec)
    layers: list[dict] = []
    avail: list[tuple[str, Ty]] = [("x", t)] if decl else []        # (id, type) of every stream so far
    explicit_only = False                                           # after a branch, never leave wiring to inference
    n = draw(st.integers(1, max_layers))
    for i in range(n):
        if t is None:                                               # undeclared image: the first layer fixes C
            first = draw(st.sampled_from([conv] + ([patch_embed] if has("PatchEmbed") else [])))
            C = draw(st.integers(1, 4))
            name, params, out = first(draw, Ty("image", C, (224, 224)))
            params["in_channels"] = C
            src = None
        else:
            src_id, t_in = avail[-1] if avail else (None, t)
            # a branch: read an earlier stream of a kind that something accepts
            if len(avail) > 1 and draw(st.integers(0, 6)) == 0:
                src_id, t_in = draw(st.sampled_from(avail[:-1]))
                explicit_only = True
            # a join: two earlier token streams of one width, along the sequence
            same = [(a, b) for a in avail for b in avail if a[0] < b[0] and a[1].kind == b[1].kind == "tokens"
                    and a[1].width == b[1].width]
            if same and has("Concat") and draw(st.integers(0, 5)) == 0:
                (a, ta), (b, tb) = draw(st.sampled_from(same))
                lid = f"cat{i}"
                layers.append({"id": lid, "type": "Concat", "inputs": [a, b], "params": {"axis": "sequence"}})
                explicit_only = True
                t = Ty("tokens", ta.width)
                drawn.expected[lid] = t
                avail.append((lid, t))
                continue
            opts = choices(t_in)
            if not opts:
                break
            fn = draw(st.sampled_from(opts))
            name, params, out = fn(draw, t_in)
            src = src_id
        lid = f"{name.lower()}{i}"
        layer: dict[str, Any] = {"id": lid, "type": name, "params": params}
        if src is not None and (explicit_only or draw(st.booleans())):
            layer["inputs"] = [src]
        # a repeat chains the layer into itself, so only a layer that keeps its input type can repeat
        if t is not None and out == t_in and "depth" not in params and draw(st.integers(0, 4)) == 0:
            layer["repeat"] = draw(st.integers(2, 3))
        if "repeat" in layer:
            drawn.stacks[lid] = "repeat"
        elif "depth" in params:
            drawn.stacks[lid] = "depth"
        layers.append(layer)
        drawn.expected[lid] = out
        avail.append((lid, out))
        t = out
    spec["layers"] = layers
    return drawn


# --- JSON values ------------------------------------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30)
dumps_options = st.fixed_dictionaries({
    "indent": st.sampled_from([None, 0, 1, 2, 4, "\t"]),
    "ensure_ascii": st.booleans(),
    "sort_keys": st.booleans(),
})


# --- mutations --------------------------------------------------------------------------------------------------------
GARBAGE = ["", ",", "}", "]", "{", "[", ":", "\"", "'", "//", "/*", "NaN", "-Infinity", "1e999", "null", "\\",
           "\x00", "\ufeff", "\ud800", "tru", "\"type\": 1", "{\"a\":", "[[[[[[", "0x10", "01", "-", "1.", ".5"]


def paths_of(x: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(x, dict):
        for k, v in x.items():
            out += paths_of(v, prefix + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += paths_of(v, prefix + (i,))
    return out


def _get_parent(doc, path):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    return cur


@st.composite
def mutated(draw, drawn_spec: Optional[dict] = None) -> bytes:
    """A valid spec, damaged once or a few times: at the data level (a key deleted, a value replaced by another
    type) or the byte level (garbage inserted, truncated, bytes swapped or flipped)."""
    doc = json.loads(json.dumps(drawn_spec if drawn_spec is not None else draw(specs()).spec))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "retype", "text"]))
        paths = [p for p in paths_of(doc) if p]
        if kind in ("delete", "retype") and paths:
            path = draw(st.sampled_from(paths))
            parent = _get_parent(doc, path)
            if kind == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(st.one_of(json_scalars, st.just([]), st.just({}),
                                                  st.integers(-10**6, 10**12), st.sampled_from(["1024", "", "T*T"])))
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 1, 2])), ensure_ascii=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 3))):
        if not raw:
            break
        op = draw(st.sampled_from(["insert", "truncate", "swap", "flip", "delete_span"]))
        i = draw(st.integers(0, len(raw)))
        if op == "insert":
            g = draw(st.one_of(st.sampled_from(GARBAGE), st.text(max_size=4)))
            raw = raw[:i] + g.encode("utf-8", "surrogatepass") + raw[i:]
        elif op == "truncate":
            raw = raw[:i]
        elif op == "swap" and len(raw) > 1:
            j = draw(st.integers(0, len(raw) - 1))
            i = min(i, len(raw) - 1)
            b = bytearray(raw)
            b[i], b[j] = b[j], b[i]
            raw = bytes(b)
        elif op == "flip" and i < len(raw):
            b = bytearray(raw)
            b[i] ^= 1 << draw(st.integers(0, 7))
            raw = bytes(b)
        elif op == "delete_span":
            j = draw(st.integers(i, min(len(raw), i + 20)))
            raw = raw[:i] + raw[j:]
    return raw
