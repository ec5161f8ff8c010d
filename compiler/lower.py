"""Lowering: spec document -> typed layer graph.

Steps, in order:
  1. model inputs become `Input` nodes;
  2. each layer is checked (keys, type, params against its op), includes are merged, composites expanded, repeats
     unrolled into numbered nodes (`vit.0` ... `vit.11`, group `vit`);
  3. explicit `inputs` become edges; cycles are reported as cycles;
  4. nodes are visited in a topological order that follows the list; a layer without `inputs` is wired by inference
     (the most recent stream it accepts; see `_infer_inputs`), and each node's shape is inferred as it is reached.
Inferred edges and every assumption are reported as warnings with the layer's location.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import ValidationError

from . import registry
from .diagnostics import Diagnostics, SpecError, did_you_mean
from .dims import Dim
from .ir import IDS, IMAGE, TOKENS, Graph, Node, TensorType
from .ops.io import SYMBOLS
from .source import Source, read_file
from .spec import LAYER_KEYS, MAX_REPEAT, SpecDoc, report_validation

MAX_INCLUDE_DEPTH = 8
MAX_NODES = 20_000
MAX_DIM = 10_000_000                # an input dimension (or a coefficient of one), as the ops' own bounds


@dataclass
class Pending:
    """A node before wiring: where it came from and what it asked for."""

    node: Node
    index: int                          # position in the flattened layer order
    refs: Optional[list[str]]           # explicit inputs (None: infer)
    ref_path: tuple = ()
    layer_id: Optional[str] = None


@dataclass
class Lowering:
    doc: SpecDoc
    src: Source
    diag: Diagnostics
    root_dir: str
    graph: Graph = field(default_factory=Graph)
    pending: list[Pending] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)        # layer id -> last node name of that layer
    first: dict[str, str] = field(default_factory=dict)      # layer id -> first node name
    extra_diags: list = field(default_factory=list)
    # layers that an error left without nodes: id -> how many nodes preceded it. What reads them (by name, by tie,
    # or by inference after them) is not reported again: one root cause, one error
    broken: dict[str, int] = field(default_factory=dict)

    def is_broken(self, ref: str) -> bool:
        return any(ref == b or ref.startswith(b + ".") for b in self.broken)

    def broken_before(self, index: int) -> bool:
        return any(at <= index for at in self.broken.values())

    def err(self, path, msg, hint=None, code=""):
        self.diag.error(path, msg, hint, code)

    def warn(self, path, msg, hint=None, code=""):
        self.diag.warning(path, msg, hint, code)


# ---------------------------------------------------------------------------------------------------------------------
def lower(doc: SpecDoc, src: Source, diag: Diagnostics) -> Graph:
    low = Lowering(doc, src, diag, os.path.dirname(os.path.abspath(src.file)) if src.file else os.getcwd())
    _inputs(low)
    for i, layer in enumerate(doc.layers):
        n_err, n_nodes = diag._errors, len(low.pending)
        _layer(low, layer, ("layers", i), prefix="", include_stack=())
        if diag._errors > n_err and len(low.pending) == n_nodes:
            lid = layer.get("id") if isinstance(layer, dict) else None
            low.broken[lid if isinstance(lid, str) else f"layers.{i}"] = n_nodes
        if len(low.pending) > MAX_NODES:
            low.err(("layers", i), f"the spec unrolls to more than {MAX_NODES:,} nodes", code="limit")
            raise SpecError(diag.items)
    _connect_explicit(low)
    _visit(low)
    _outputs(low)
    return low.graph


# --- 1. inputs -------------------------------------------------------------------------------------------------------
def _inputs(low: Lowering) -> None:
    for j, inp in enumerate(low.doc.inputs or []):
        path = ("inputs", j)
        ok = True
        for k, d in enumerate(inp.shape):
            try:
                dim = Dim.of(d)
            except ValueError as e:
                low.err(path + ("shape", k), str(e), "use integers or the symbols B, T, F")
                ok = False
                continue
            for s in dim.symbols():
                if s not in SYMBOLS:
                    low.err(path + ("shape", k), f"unknown size symbol {s!r}",
                            "known: " + ", ".join(f"{k} ({v})" for k, v in SYMBOLS.items()))
                    ok = False
            if dim.is_const and dim.const <= 0:
                low.err(path + ("shape", k), f"dimension must be positive, got {dim.const}")
                ok = False
            if any(abs(c) > MAX_DIM for c in dim.terms.values()) or any(len(t) > 3 for t in dim.terms):
                low.err(path + ("shape", k), f"dimension {dim} is out of range (at most {MAX_DIM:,}, "
                                             "products of at most 3 symbols)", code="limit")
                ok = False
        want = {"image": 4, "video": 5, "ids": 2, "tokens": 3, "vector": 2, "scalar": 1}[inp.kind]
        if len(inp.shape) != want:
            low.err(path + ("shape",), f"a {inp.kind} input has {want} dimensions, got {len(inp.shape)}")
            ok = False
        else:      # the width (channels C, features D) sizes weights: a number, never a symbol
            w = {"image": 1, "video": 2, "tokens": 2, "vector": 1}.get(inp.kind)
            if w is not None and ok and not Dim.of(inp.shape[w]).is_const:
                low.err(path + ("shape", w), f"the {'channels' if inp.kind in ('image', 'video') else 'width'} "
                                             f"of a {inp.kind} input must be a number, got {inp.shape[w]!r}")
                ok = False
        if inp.name in low.ids:
            low.err(path + ("name",), f"input name {inp.name!r} is used twice")
            continue
        params = registry.get("Input").Params(kind=inp.kind, shape=list(inp.shape),
                                              dtype=inp.dtype or ("int" if inp.kind == "ids" else "float"))
        node = Node(inp.name, "Input", params, path, label=inp.note or "")
        if ok:
            node.outputs = registry.get("Input").shape(params, [])
        low.graph.add(node)
        low.ids[inp.name] = low.first[inp.name] = inp.name


# --- 2. layers -------------------------------------------------------------------------------------------------------
def _layer(low: Lowering, layer: Any, path: tuple, prefix: str, include_stack: tuple, frozen: bool = False) -> None:
    """One spec layer (at `path`, ids under `prefix`) into pending nodes: an include is merged and lowered again, a
    composite expands into its parts, any other op unrolls into its copies. Errors stop at the first that leaves
    nothing to lower."""
    params = _layer_params(low, layer, path)
    if params is None:
        return
    if "include" in layer:
        _included(low, layer, params, path, prefix, include_stack, frozen)
        return
    typed = _op_of(low, layer.get("type"), params, path)
    name = typed and _node_name(low, layer, path, prefix)
    settings = name and _settings(low, layer, path, frozen)
    if not settings:
        return
    op, params = typed
    repeat, frozen = settings
    p = _validated(low, op, params, path)
    if p is None:
        return
    repeat = _stacked(low, op, p, path, repeat)
    if repeat is None:
        return
    if op.composite:
        _expand(low, op, p, layer, path, name[0], include_stack, frozen)
        return
    refs = _explicit_refs(low, op, layer.get("inputs"), path)
    if refs is not _REFUSED:
        _unroll(low, op, p, layer, path, name, refs, repeat, frozen)


_REFUSED = object()        # `inputs` refused with an error: the layer makes no nodes


def _layer_params(low: Lowering, layer: Any, path: tuple) -> Optional[dict]:
    """The layer's params (a copy), its keys checked; None when it is not an object or its params are not one."""
    if not isinstance(layer, dict):
        low.err(path, "a layer must be an object with 'type' and 'params'")
        return None
    for k in layer:
        if k not in LAYER_KEYS:
            low.err(path + (k,), f"unknown layer key {k!r}", did_you_mean(k, LAYER_KEYS) or
                    "layer keys: " + ", ".join(LAYER_KEYS), code="unknown-key")
    params = layer.get("params", {})
    if not isinstance(params, dict):
        low.err(path + ("params",), "params must be an object")
        return None
    return dict(params)


def _included(low: Lowering, layer: dict, params: dict, path: tuple, prefix: str, include_stack: tuple,
              frozen: bool) -> None:
    """A layer that includes a preset file: the file's params under the layer's own, lowered as one layer."""
    inc = _include(low, layer["include"], path + ("include",), include_stack)
    if inc is None:
        return
    comp, comp_file = inc
    sub = {k: v for k, v in layer.items() if k not in ("include", "params")}
    if "type" not in sub and "type" in comp:
        sub["type"] = comp["type"]
    sub["params"] = {**comp.get("params", {}), **params}
    if "include" in comp:
        sub["include"] = comp["include"]
    _layer(low, sub, path, prefix, include_stack + (comp_file,), frozen=frozen)


def _op_of(low: Lowering, typ: Any, params: dict, path: tuple) -> Optional[tuple[type, dict]]:
    """(op, params) of a layer's `type` and optional `params.type` (a kind: TransformerBlock + GQA_MoE_Layer), the
    kind key taken out of params; None (reported) when either is unknown."""
    if not isinstance(typ, str):
        low.err(path + ("type",), "layer type is missing" if typ is None else "layer type must be a string",
                "known types: " + ", ".join(registry.all_ops()))
        return None
    kind = params.get("type")
    if isinstance(kind, str):
        op_name = registry.kind_op(typ, kind)
        if op_name is None:
            kinds = [n for (parent, n) in _kinds_of(typ)]
            low.err(path + ("params", "type"), f"{typ} has no kind {kind!r}",
                    did_you_mean(kind, kinds) or ("kinds: " + ", ".join(kinds) if kinds else None), code="unknown-type")
            return None
        params = {k: v for k, v in params.items() if k != "type"}
        typ = op_name
    op = registry.find(typ)
    if op is None or typ == "Input":
        known = [o for o in registry.all_ops() if o != "Input"]
        low.err(path + ("type",), f"unknown layer type {typ!r}",
                did_you_mean(typ, known) or "see `omnic schema` for the layer types", code="unknown-type")
        return None
    return op, params


def _node_name(low: Lowering, layer: dict, path: tuple, prefix: str) -> Optional[tuple[str, Optional[str]]]:
    """(node name, layer id): the id under the composite's prefix, else `layers.<i>`; None when it is taken. An
    invalid id is reported and left out."""
    lid = layer.get("id")
    if lid is not None and (not isinstance(lid, str) or not _valid_id(lid)):
        low.err(path + ("id",), f"invalid id {lid!r}",
                "ids are letters, digits and '_', dot-separated, starting with a letter (e.g. 'vision', 'lm_head')")
        lid = None
    if lid:
        name = prefix + lid
    elif not prefix:
        name = f"layers.{path[-1]}"
    else:
        low.err(path, f"internal: a part of composite {prefix.rstrip('.')} has no id")
        return None
    if name in low.ids or name in low.graph:
        low.err(path + ("id",), f"id {name!r} is used twice", "give each layer its own id")
        return None
    return name, lid


def _settings(low: Lowering, layer: dict, path: tuple, frozen: bool) -> Optional[tuple[int, bool]]:
    """(repeat, frozen) of the layer (frozen also when its parent is); None when repeat is invalid."""
    repeat = layer.get("repeat", 1)
    # the seed format puts `repeat` / `depth` inside params; ops that stack declare them as params
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1 or repeat > MAX_REPEAT:
        low.err(path + ("repeat",), f"repeat must be an integer from 1 to {MAX_REPEAT}, got {repeat!r}")
        return None
    layer_frozen = layer.get("frozen", False)
    if not isinstance(layer_frozen, bool):
        low.err(path + ("frozen",), "frozen must be true or false")
        layer_frozen = False
    return repeat, frozen or layer_frozen


def _validated(low: Lowering, op, params: dict, path: tuple):
    """The op's params model of `params`; None when invalid (every field error reported at its place)."""
    try:
        return op.Params.model_validate(params)
    except ValidationError as e:
        report_validation(e, path + ("params",), low.diag, op.Params)
        return None


def _stacked(low: Lowering, op, p, path: tuple, repeat: int) -> Optional[int]:
    """The copies the layer unrolls into (the layer's repeat times the op's own stack, `depth`), after the op's
    `check` of its params; None when either refuses."""
    def check_diag(fld: str, msg: str, hint: str | None = None, severity: str = "error") -> None:
        low.diag.add(severity, path + ("params",) + tuple(f for f in fld.split(".") if f), msg, hint)

    n_err = len(low.diag.items)
    try:
        repeat *= op.stack(p)
        op.check(p, check_diag)
    except ValueError as e:
        low.err(path + ("params",), str(e))
        return None
    if any(d.severity == "error" for d in low.diag.items[n_err:]):
        return None
    if repeat > MAX_REPEAT:
        low.err(path, f"the layer unrolls into {repeat:,} copies; the limit is {MAX_REPEAT:,}", code="limit")
        return None
    return repeat


def _expand(low: Lowering, op, p, layer: dict, path: tuple, name: str, include_stack: tuple, frozen: bool) -> None:
    """A composite: its parts lowered as layers under `name.`; "$k" in a part's inputs is the composite's k-th input
    (inferred if the composite names none)."""
    try:
        subs = op.expand(p, layer)
    except ValueError as e:
        low.err(path + ("params",), str(e))
        return
    outer = layer.get("inputs")
    sub_prefix = name + "."
    first_sub = None
    for sub in subs:
        sub = dict(sub)
        refs = sub.get("inputs")
        if refs is not None:
            if any(r.startswith("$") for r in refs) and not outer:
                del sub["inputs"]
            else:
                sub["inputs"] = [outer[int(r[1:])] if r.startswith("$") else sub_prefix + r for r in refs]
        if sub.get("params", {}).get("tie"):
            sub["params"] = {**sub["params"], "tie": sub_prefix + sub["params"]["tie"]}
        n_before = len(low.pending)
        _layer(low, sub, path, sub_prefix, include_stack, frozen=frozen)
        if first_sub is None and len(low.pending) > n_before:
            first_sub = low.pending[n_before].node.name
    low.ids[name] = low.pending[-1].node.name if low.pending else name
    low.first[name] = first_sub or name


def _explicit_refs(low: Lowering, op, refs: Any, path: tuple):
    """The layer's `inputs` (None: infer them); `_REFUSED` when an empty list leaves a required input unread. Not a
    list of strings: reported, and inferred instead."""
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, str) for r in refs)):
        low.err(path + ("inputs",), "inputs must be a list of layer ids (strings)")
        return None
    if refs == [] and op.slots and not op.slots[0].optional:   # else the node stays unwired, with no error
        low.err(path + ("inputs",), f"inputs is empty, but {op.name} reads {len(op.slots)} input(s)",
                "name the layers it reads, or leave 'inputs' out to wire it by inference", code="dangling")
        return _REFUSED
    return refs


def _unroll(low: Lowering, op, p, layer: dict, path: tuple, name_id: tuple, refs: Optional[list[str]], repeat: int,
            frozen: bool) -> None:
    """The layer's nodes: one, or `repeat` numbered copies (`vit.0` ...) chained through their first input."""
    name, lid = name_id
    first_name = None
    # a stack is numbered (`vit.0`) whenever it is one, also of depth 1: checkpoints name `layers.0`
    numbered = repeat > 1 or "repeat" in layer or any(getattr(p, f, None) is not None for f in ("depth", "repeat"))
    for r in range(repeat):
        nm = f"{name}.{r}" if numbered else name
        node = Node(nm, op.name, op.unroll(p, r, repeat), path, frozen=frozen, group=name if numbered else None,
                    label=p.note or "")
        low.graph.add(node)
        low.pending.append(Pending(node, len(low.pending), refs if r == 0 else _chained(refs, f"{name}.{r - 1}"),
                                   path + ("inputs",), lid))
        first_name = first_name or nm
    low.ids[name] = f"{name}.{repeat - 1}" if numbered else name
    low.first[name] = first_name


def _chained(refs: Optional[list[str]], prev: str) -> list[str]:
    """The inputs of copy r > 0 of a repeated layer: the previous copy's output in place of the first input, the
    side inputs named after it (AdaLN-Zero's condition) kept in every copy."""
    return [prev] + (refs[1:] if refs else [])


def _kinds_of(parent: str):
    registry.all_ops()
    return [k for k in registry._KINDS if k[0] == parent]


def _valid_id(s: str) -> bool:
    return bool(s) and all(part.isidentifier() and part.isascii() for part in s.split(".")) and len(s) <= 200


def _include(low: Lowering, ref: Any, path: tuple, stack: tuple):
    if not isinstance(ref, str):
        low.err(path, "include must be a relative file path (string)")
        return None
    if "://" in ref or ref.startswith(("http:", "https:", "file:", "//")):
        low.err(path, f"includes are files inside the spec's folder, not URLs: {ref!r}", code="include")
        return None
    if "\x00" in ref:                                    # the OS refuses such a name (a ValueError, not an OSError)
        low.err(path, "include names a file with a NUL character", code="include")
        return None
    if os.path.isabs(ref):
        low.err(path, f"include must be a relative path, got {ref!r}", code="include")
        return None
    base = os.path.dirname(stack[-1]) if stack else low.root_dir
    target = os.path.realpath(os.path.join(base, ref))
    root = os.path.realpath(low.root_dir)
    if os.path.commonpath([root, target]) != root:
        low.err(path, f"include {ref!r} leaves the spec's folder ({root})", "keep components under the spec's folder",
                code="include")
        return None
    if target in stack or (low.src.file and target == os.path.realpath(low.src.file)):
        chain = " -> ".join(os.path.relpath(s, root) for s in stack + (target,))
        low.err(path, f"include loop: {chain}", code="include")
        return None
    if len(stack) >= MAX_INCLUDE_DEPTH:
        low.err(path, f"includes nested deeper than {MAX_INCLUDE_DEPTH}", code="include")
        return None
    if not os.path.isfile(target):
        low.err(path, f"included file not found: {ref!r}", code="include")
        return None
    try:
        comp = read_file(target)
    except SpecError as e:
        low.diag.items.extend(e.diagnostics)
        low.err(path, f"included file {ref!r} is not valid JSON (see above)", code="include")
        return None
    data = comp.data
    if not isinstance(data, dict) or not ("type" in data or "include" in data):
        low.err(path, f"included file {ref!r} must be an object with 'type' and 'params' (a layer preset)",
                code="include")
        return None
    for k in data:
        if k not in ("type", "params", "include", "note", "name", "$schema"):
            low.err(path, f"included file {ref!r}: unknown key {k!r}", did_you_mean(k, ["type", "params", "include"]))
            return None
    return data, target


# --- 3. explicit edges -----------------------------------------------------------------------------------------------
def _resolve_ref(low: Lowering, ref: str) -> Optional[tuple[str, str]]:
    if ref in low.ids:
        return low.ids[ref], "out"
    if ref in low.graph:
        return ref, "out"
    if "." in ref:
        head, out = ref.rsplit(".", 1)
        if head in low.ids:
            return low.ids[head], out
        if head in low.graph:
            return head, out
    return None


def _connect_explicit(low: Lowering) -> None:
    for pd in low.pending:
        if pd.refs is None:
            continue
        resolved = []
        for k, ref in enumerate(pd.refs):
            r = _resolve_ref(low, ref)
            if r is None and low.is_broken(ref):       # its own error is reported
                resolved = None
                break
            if r is None:
                low.err(pd.ref_path + (k,), f"unknown input {ref!r}",
                        did_you_mean(ref, list(low.ids)) or "inputs name layer ids or model inputs", code="dangling")
                resolved = None
                break
            if r[0] == pd.node.name:
                low.err(pd.ref_path + (k,), f"layer {ref!r} takes its own output as input", code="cycle")
                resolved = None
                break
            resolved.append(r)
        pd.refs_resolved = resolved
        if resolved:
            for src, out in resolved:
                low.graph.add_edge(src, pd.node.name, out, False)
    names = low.graph.find_cycle()
    if names is None:
        return
    cyc = list(zip(names, names[1:]))
    pd = next((p for p in low.pending if p.node.name == cyc[0][1]), None)
    low.err(pd.ref_path if pd else (), "the wiring has a cycle: " + " -> ".join(names),
            "a layer cannot depend on its own output", code="cycle")
    raise SpecError(low.diag.items)


# --- 4. visit in order: wiring inference and shapes -------------------------------------------------------------------
@dataclass
class Stream:
    node: str
    out: str
    type: TensorType
    consumed: bool = False


def _visit(low: Lowering) -> None:
    from .shapes import infer_node

    g = low.graph
    index = {pd.node.name: pd.index for pd in low.pending}
    pend = {pd.node.name: pd for pd in low.pending}
    for n in g.order:
        index.setdefault(n, -1)
    order = g.topo_order(key=lambda n: (index[n], n))
    streams: list[Stream] = [Stream(n, "out", g[n].out) for n in g.order if g[n].op == "Input" and g[n].outputs]
    new_order = [n for n in g.order if g[n].op == "Input"]
    by_key: dict[tuple[str, str], list[Stream]] = {}
    n_indexed = 0
    for name in order:
        if name not in pend:
            continue
        pd = pend[name]
        node = pd.node
        op = registry.get(node.op)
        if pd.refs is None:
            _infer_inputs(low, pd, op, streams, new_order)
        else:
            for src, out in getattr(pd, "refs_resolved", None) or []:
                node.inputs.append((src, out))
                node.inferred.append(False)
        new_order.append(name)
        ok = all(out in g[src].outputs for src, out in node.inputs)
        missing = [f"{src}.{out}" for src, out in node.inputs if src in g and g[src].outputs and out not in g[src].outputs]
        if missing:
            low.err(pd.ref_path, f"{', '.join(missing)}: no such output",
                    "outputs: " + ", ".join(f"{s}.{o}" for s, _ in node.inputs for o in g[s].outputs))
        if ok and node.inputs or (ok and not op.slots):
            infer_node(g, node, low.diag)
        if getattr(node.params, "tie", None):
            _tie(low, node)        # after inference: the shape check needs the resolved in_features
        for s in streams[n_indexed:]:      # index new streams: marking by scanning them all is quadratic
            by_key.setdefault((s.node, s.out), []).append(s)
        n_indexed = len(streams)
        for src, out in node.inputs:
            for s in by_key.get((src, out), ()):
                s.consumed = True
        for out, t in node.outputs.items():
            streams.append(Stream(name, out, t))
    seen = set(new_order)     # inputs that wiring inference implied were added to the graph after new_order began
    g.order = [n for n in g.names() if n not in seen and g[n].op == "Input"] + new_order
    _lint(low)


def _lint(low: Lowering) -> None:
    """Whole-graph remarks: heads that could be tied, attention over patch tokens without positions."""
    g = low.graph
    embs = {(n.params.num_embeddings, n.params.embedding_dim): n for n in g.nodes() if n.op == "Embedding"}
    for n in g.nodes():
        if n.op == "Linear" and n.params.tied_name is None and n.params.in_features is not None \
                and not {"tie", "role"} & n.params.model_fields_set:   # "tie": null / "role": "head": untied on purpose
            e = embs.get((n.params.out_features, n.params.in_features))
            if e is not None:
                # an output embedding: quantisers keep it in 16-bit like the input embedding
                n.params = n.params.model_copy(update={"role": "head"})
                low.warn(n.path, f"{n.name} maps width {n.params.in_features} to the vocabulary {n.params.out_features} "
                                 f"of {e.name} but is not tied to it: counted separately "
                                 f"({n.params.in_features * n.params.out_features:,} parameters)",
                         f"add \"tie\": \"{e.name}\" to share the embedding, or keep it untied deliberately",
                         code="untied-head")
    warned = set()
    for n in g.nodes():
        if not n.inputs or n.path in warned or not hasattr(n.params, "rope"):
            continue
        x = g[n.inputs[0][0]].outputs.get(n.inputs[0][1])
        if x is not None and x.grid is not None and not x.positioned and n.params.rope == "none" \
                and not getattr(n.params, "causal", False):
            warned.add(n.path)
            low.warn(n.path, f"{n.name}: attention over {x.grid[0]}x{x.grid[1]} patch tokens that carry no position "
                             f"information (no position embedding, no RoPE): the result ignores where patches are",
                     "use a PatchEmbed with positions 'learned', or rope '2d' in the blocks", code="no-positions")


def _tie(low: Lowering, node: Node) -> None:
    """A Linear with `tie` shares the weight of an Embedding: resolve the id to the tensor's full name."""
    ref = node.params.tie
    tgt = low.ids.get(ref, ref if ref in low.graph else None)
    path = node.path + ("params", "tie")
    if (tgt is None or tgt not in low.graph) and low.is_broken(ref):
        return
    if tgt is None or tgt not in low.graph:
        low.err(path, f"tie names an unknown layer {ref!r}", did_you_mean(ref, list(low.ids)))
        return
    emb = low.graph[tgt]
    if emb.op != "Embedding":
        low.err(path, f"tie must name an Embedding layer; {ref!r} is a {emb.op}")
        return
    e, p = emb.params, node.params
    if (e.num_embeddings, e.embedding_dim) != (p.out_features, p.in_features or e.embedding_dim):
        low.err(path, f"tied weight shapes differ: embedding ({e.num_embeddings}, {e.embedding_dim}) vs head "
                      f"({p.out_features}, {p.in_features})", "a tied head maps width D to the vocabulary V")
        return
    node.params = p.model_copy(update={"tied_name": f"{tgt}.weight", "bias": p.bias})


def _infer_inputs(low: Lowering, pd: Pending, op, streams: list[Stream], order: list[str]) -> None:
    """Wire a layer that names no inputs: the most recent stream it accepts.

    Rules (each use is reported), tried in order until one decides: an embedding without ids gets an `input_ids`
    input (`_ids`); a layer with a fixed input width takes the most recent stream of its kind and width, and a token
    layer that finds several unconsumed token streams of its width joins them along the sequence, in order
    (`_recent`); a feature map feeding a token layer is flattened to tokens (`_flattened`); a first layer without
    any stream gets an image input (`_first_image`); a Linear that no stream fits but whose width looks like a
    vocabulary is read as a token embedding (`_linear_as_embedding`). Else the error says what was missing.
    """
    if not op.slots:
        return
    w = _Wiring(low, pd, op, streams, order)
    if not any(rule(w) for rule in (_ids, _recent, _flattened, _first_image, _linear_as_embedding)):
        _no_stream(w)


@dataclass
class _Wiring:
    """A layer being wired by inference: what its first slot accepts, and the streams so far."""

    low: Lowering
    pd: Pending
    op: Any
    streams: list[Stream]
    order: list[str]

    def __post_init__(self):
        self.g, self.node = self.low.graph, self.pd.node
        self.path, self.slot, self.want_w = self.node.path, self.op.slots[0], self.op.in_width(self.node.params)

    def fits(self, s: Stream, kinds) -> bool:
        return s.type.kind in kinds and (self.want_w is None or s.type.width == self.want_w)

    def wire(self, src: str, out: str = "out") -> None:
        self.g.connect(self.node, src, out, inferred=True)


def _ids(w: _Wiring) -> bool:
    """An op reading token ids: the latest ids stream, or an implied `input_ids` input."""
    if w.slot.kinds != (IDS,):
        return False
    ids = [s for s in w.streams if s.type.kind == IDS]
    if not ids:
        inp = _implicit_input(w.low, "input_ids", "ids", ["B", "T"], w.path,
                              "no token-id input is declared: assuming input_ids of shape (B, T)")
        if not w.g[inp].outputs:          # the name is taken by an input or a layer that has no shape
            w.low.err(w.path, f"no token ids to wire into {w.node.name}: {inp!r} has no valid shape", code="no-input")
            return True
        w.streams.append(Stream(inp, "out", w.g[inp].out))
        ids = [w.streams[-1]]
    w.wire(ids[-1].node, ids[-1].out)
    w.low.diag.note(w.path, f"inferred input: {ids[-1].node} -> {w.node.name}", code="inferred-edge")
    return True


def _recent(w: _Wiring) -> bool:
    """The most recent stream that fits (usually the last); a block that joins streams joins every unconsumed
    token stream as wide as that one."""
    best = next((s for s in reversed(w.streams) if w.fits(s, w.slot.kinds)), None)
    if best is None:
        return False
    if TOKENS in w.slot.kinds and getattr(w.op, "joins_streams", False):
        # "of its width": a block that leaves its width to inference joins only streams as wide as `best`
        loose = [s for s in w.streams if not s.consumed and s.type.kind == TOKENS and w.fits(s, w.slot.kinds)
                 and s.type.width == best.type.width]
        if len(loose) > 1:
            w.wire(_implicit_concat(w.low, w.node, loose, w.streams, w.order))
            w.low.warn(w.path, "inferred join: " + " + ".join(s.node for s in loose) +
                       f" concatenated along the sequence -> {w.node.name}",
                       "name the streams in 'inputs' (and a Concat layer) to make this explicit", code="inferred-edge")
            return True
    w.wire(best.node, best.out)
    plain = best is w.streams[-1] and not best.consumed
    # chaining to the stream just produced is the format's reading of a list: a note; anything else a warning
    (w.low.diag.note if plain else w.low.warn)(w.path, f"inferred input: {best.node} {best.type} -> {w.node.name}",
                                               code="inferred-edge")
    return True


def _flattened(w: _Wiring) -> bool:
    """A feature map into a token layer: an implied Flatten between them."""
    from .shapes import infer_node
    if TOKENS not in w.slot.kinds:
        return False
    maps = [s for s in w.streams if s.type.kind == IMAGE and (w.want_w is None or s.type.width == w.want_w)
            and s.node != "image"]
    if not maps:
        return False
    src = maps[-1]
    fname = f"{src.node}_flatten"
    fl = Node(fname, "Flatten", registry.get("Flatten").Params(), w.path)
    w.g.add(fl)
    w.g.connect(fl, src.node, src.out, inferred=True)
    w.order.append(fname)
    src.consumed = True
    w.wire(fname)
    if not infer_node(w.g, fl, w.low.diag):    # its error is reported; the consumer stays unresolved
        return True
    w.streams.append(Stream(fname, "out", fl.out, consumed=True))
    w.low.warn(w.path, f"inferred input: {src.node} {src.type} flattened to tokens {fl.out} -> {w.node.name}",
               code="inferred-edge")
    return True


def _first_image(w: _Wiring) -> bool:
    """Nothing at all yet: the model's first layer takes an image."""
    if IMAGE not in w.slot.kinds or [s for s in w.streams if s.type.kind == IMAGE]:
        return False
    ch = w.want_w or 3
    inp = _implicit_input(w.low, "image", "image", ["B", ch, 224, 224], w.path,
                          f"no image input is declared: assuming image of shape (B, {ch}, 224, 224)")
    if not w.g[inp].outputs:
        w.low.err(w.path, f"no image to wire into {w.node.name}: {inp!r} has no valid shape", code="no-input")
        return True
    w.streams.append(Stream(inp, "out", w.g[inp].out))
    w.wire(inp)
    return True


def _linear_as_embedding(w: _Wiring) -> bool:
    """A Linear that nothing feeds, over a vocabulary-sized width: a token embedding written as Linear."""
    node, want_w, p = w.node, w.want_w, w.node.params
    if node.op != "Linear" or want_w is None or any(s.type.width == want_w for s in w.streams):
        return False
    emb = registry.get("Embedding").Params(num_embeddings=want_w, embedding_dim=p.out_features, note=p.note)
    node.op, node.params = "Embedding", emb
    w.low.warn(w.path, f"Linear(in_features={want_w}) has no input of width {want_w}: read as a token embedding "
                       f"Embedding({want_w} -> {p.out_features}) of token ids, without bias",
               "write it as {\"type\": \"Embedding\", \"params\": {\"num_embeddings\": %d, \"embedding_dim\": %d}}"
               % (want_w, p.out_features), code="reinterpreted")
    _infer_inputs(w.low, w.pd, registry.get("Embedding"), w.streams, w.order)
    return True


def _no_stream(w: _Wiring) -> None:
    """No rule wired the layer: say what it needs and what the nearest stream is (unless an invalid layer before
    it, already reported, may be its input)."""
    low, node, slot, want_w = w.low, w.node, w.slot, w.want_w
    if low.broken_before(w.pd.index):
        low.diag.note(w.path, f"{node.name} is not wired: an invalid layer before it (reported) may be its input",
                      code="no-input")
        return
    near = w.streams[-1] if w.streams else None
    what = f"{' or '.join(slot.kinds)} input" + (f" of width {want_w}" if want_w else "")
    desc = ""
    hint = "wire it explicitly with 'inputs', adding a layer that produces the shape it needs"
    if near is not None:
        width = near.type.width
        desc = (f"; the most recent stream is {near.node} {near.type} ({near.type.kind}"
                + (f", width {width}" if width is not None else "") + ")")
        if IMAGE in slot.kinds and near.type.kind == TOKENS and want_w and width:
            per = width / want_w
            side = int(round(per ** 0.5)) if per >= 1 else 0
            grid = f"{side}x{side}" if side * side == per else f"{per:g} positions"
            desc += (f": {width} values per token are {grid} of {want_w}-channel latents"
                     f" ({want_w}x8x8 latents would need {want_w * 64} values per token)")
            hint = (f"make the producer emit {want_w} x h x w values per token and add a Reshape "
                    f"(to: map, channels: {want_w}), wiring it with 'inputs'")
    low.err(w.path, f"no stream fits {node.op} '{node.name}': it needs a {what}{desc}", hint, code="no-input")


def _implicit_input(low: Lowering, name: str, kind: str, shape: list, path: tuple, msg: str) -> str:
    g = low.graph
    if name in g:
        return name
    params = registry.get("Input").Params(kind=kind, shape=shape, dtype="int" if kind == "ids" else "float")
    node = Node(name, "Input", params, ())
    node.outputs = registry.get("Input").shape(params, [])
    g.add(node)
    low.ids.setdefault(name, name)
    low.warn(path, msg, "declare the model's inputs in 'inputs'", code="implicit-input")
    return name


def _implicit_concat(low: Lowering, node: Node, parts: list[Stream], streams, order) -> str:
    from .shapes import infer_node
    g = low.graph
    name = f"{node.name}_join"
    cat = Node(name, "Concat", registry.get("Concat").Params(axis="sequence"), node.path)
    g.add(cat)
    for s in parts:
        g.connect(cat, s.node, s.out, inferred=True)
        s.consumed = True
    order.append(name)
    if infer_node(g, cat, low.diag):       # else the join's error is reported and the consumer stays unresolved
        streams.append(Stream(name, "out", cat.out, consumed=True))
    return name


# --- outputs -----------------------------------------------------------------------------------------------------------
def _outputs(low: Lowering) -> None:
    g = low.graph
    if low.doc.outputs:
        for k, ref in enumerate(low.doc.outputs):
            r = _resolve_ref(low, ref)
            if r is None and low.is_broken(ref):
                continue
            if r is None:
                low.err(("outputs", k), f"unknown output {ref!r}", did_you_mean(ref, list(low.ids)))
            else:
                g.outputs.append(r)
        return
    for n in g.nodes():
        if n.op != "Input" and not g.consumers(n.name):
            for out in n.outputs:
                g.outputs.append((n.name, out))
