"""`omnic build --target onnx-decode`: a decoder LM as one ONNX graph that decodes with its past key/values as
inputs and outputs, in the layout onnxruntime-genai and Optimum use:

    inputs   input_ids (batch, seq) int64, attention_mask (batch, total_seq) int64 (1 = token, 0 = padding),
             position_ids (batch, seq) int64, past_key_values.{i}.key / .value (batch, kv_heads, past_seq, head_size)
    outputs  logits (batch, seq, vocab), present.{i}.key / .value (batch, kv_heads, total_seq, head_size)
i counts the attention layers from 0; total_seq = past_seq + seq. The first call (the prompt) passes past tensors
of length 0; each later call the presents of the one before. Padding is on the left: a padded row's
attention_mask is 0 there and its position_ids count its tokens only (cumsum(attention_mask) - 1, as
transformers' generate). A query attends to keys at or before its place in the sequence (within a sliding layer's
window) whose attention_mask is 1; a query with no such key (a padding token) attends to every key, so that its
output stays finite (it is never read).

The graph is the torch runtime's own model: each attention layer runs with a `Given` as its cache, the
`given` hook of runtime_torch/ops/transformer.py, which supplies the rotary rows of `position_ids`, the past K/V
(the layer appends its new ones: the presents) and the mask; every other node runs as in the model (its decode
plan is runtime_common/decode.py's, which checks that the graph can decode at all). Refused with a BuildError that
says why: models with inputs other than the token ids (VLMs: export their parts with --target onnx), layers whose
decode state is not attention K/V (LFM2's short convolutions, SSMs, MLA's compressed cache), non-causal attention,
2-D RoPE, and RoPE whose frequencies depend on the sequence length (dynamic, longrope) or nanoVLM's
rope_rescale_past.

`write(compiled, out_dir, weights=False, seed=0, weights_from=None, key_map=())`: builds the model (seeded or read
from a checkpoint), traces the decode step with torch.export (batch, seq, past_seq and total_seq dynamic),
converts, optimises and saves it as compiler/emit/onnx.py does, then checks it: a left-padded batch of 2 decodes
greedily for a few steps in onnxruntime and in torch (the same module), logits and presents within ATOL + RTOL
|torch| at every step and the tokens equal, else BuildError. Writes model.onnx (+ model.onnx.data), report.json,
onnx.json (the layout: names, layers, heads, head size, vocabulary, and the check's differences).
Also genai_config.json, the model's configuration for onnxruntime-genai (its `og.Model(out_dir)` loads the folder
and decodes with it; tests/test_onnx_decode.py checks its greedy tokens against transformers'), when every attention
layer has the same key/value heads and head size (genai takes one of each); onnx.json says why when it is not
written. Token ids (bos, eos, pad) are read from the Hugging Face files beside the checkpoint of `--weights-from`
(generation_config.json, then config.json); without them the config names no eos (genai then stops at max_length).
Sources: https://github.com/microsoft/onnxruntime-genai (genai_config.json: past_key_values.%d.key,
present.%d.key), https://huggingface.co/docs/optimum (ONNX decoder with past).
"""
from __future__ import annotations

import gc
import json
import os

import numpy as np
import torch

from compiler import registry

from . import onnx as onnx_emit
from . import onnx_convert
from .build import BuildError

ATOL = RTOL = 1e-4
TRACE = {"B": 2, "T": 3, "P": 4}           # example sizes of the trace: batch, new tokens, past tokens
CHECK = {"B": 2, "T": 5, "steps": 3}        # the check: a left-padded batch of 2, a prompt of 5, 3 greedy steps
ATTENTION_OPS = ("TransformerBlock", "GQA_MoE_Layer")


class Context:
    """What every attention layer of one call shares: positions and the padding mask (see the module docstring)."""

    def __init__(self, attention_mask: torch.Tensor, position_ids: torch.Tensor, past: int):
        self.mask, self.positions, self.past = attention_mask, position_ids, past
        self._rope: dict = {}
        self._keep: dict = {}

    def rope(self, rot, h):
        """cos, sin (B, 1, T, rd) of position_ids, with `rot`'s frequencies (kernels.RopeTable's arithmetic)."""
        from runtime_torch.kernels import RopeTable
        if rot.key not in self._rope:
            B, T = self.positions.shape
            cos, sin = RopeTable.angles(rot, None, self.positions.reshape(-1).to(torch.float32), h.dtype)
            self._rope[rot.key] = (cos.view(B, 1, T, -1), sin.view(B, 1, T, -1))     # (B, 1, T, rd) each
        return self._rope[rot.key]

    def keep(self, window):
        """(B, 1, T, S) True where a query attends a key: causal by place, within `window`, not padding."""
        if window not in self._keep:
            B, T = self.positions.shape
            S = self.past + T
            k = torch.arange(S, device=self.mask.device)[None, :]                    # (1, S)
            q = self.past + torch.arange(T, device=self.mask.device)[:, None]        # (T, 1)
            keep = k <= q
            if window is not None:
                keep = keep & (k > q - window)
            keep = keep[None, None] & (self.mask.narrow(1, 0, S) != 0)[:, None, None, :]   # (B, 1, T, S)
            self._keep[window] = keep | ~keep.any(dim=-1, keepdim=True)              # a padding query sees all
        return self._keep[window]


class Given:
    """The cache of one attention layer in the decode graph: the hook runtime_torch/ops/transformer.py reads
    (`given`), past K/V in, present K/V (past + new) out."""

    seen = n = 0

    def __init__(self, ctx: Context, past_k: torch.Tensor, past_v: torch.Tensor):
        self.given, self.ctx, self.past, self.present = self, ctx, (past_k, past_v), None
        self.state: dict = {}

    def rope(self, rot, h):
        return self.ctx.rope(rot, h)

    def keep(self, window):
        return self.ctx.keep(window)

    def extend(self, k, v, window):
        """(B, kv, past + T, hs) each: every layer keeps the whole sequence (a sliding layer's mask does the rest)."""
        self.present = (torch.cat((self.past[0], k), dim=2), torch.cat((self.past[1], v), dim=2))
        return self.present


class DecodeStep(torch.nn.Module):
    """model's decode step with positional inputs and outputs in the layout of the module docstring."""

    def __init__(self, model):
        super().__init__()
        from runtime_torch.generate import DecodeSession
        try:
            session = DecodeSession(model, pack=False)
        except ValueError as e:
            raise BuildError(f"onnx-decode: {e}") from None
        if session.others:
            raise BuildError(f"onnx-decode exports a text-only decoder; this model also takes "
                             f"{', '.join(session.others)} (a VLM or another multi-input model): export it with "
                             f"--target onnx, or its language model alone")
        self.model = model
        self.input = session.input
        self.plan = session.prefill
        self.logits = session.logits
        self.layers = [name for name, _, _, cached in self.plan if cached]
        check_layers(model.graph, self.layers)
        self.input_names = ["input_ids", "attention_mask", "position_ids"] + [
            f"past_key_values.{i}.{kv}" for i in range(len(self.layers)) for kv in ("key", "value")]
        self.output_names = ["logits"] + [f"present.{i}.{kv}" for i in range(len(self.layers))
                                          for kv in ("key", "value")]

    def forward(self, input_ids, attention_mask, position_ids, *past):
        ctx = Context(attention_mask, position_ids, past[0].shape[2])
        given = {name: Given(ctx, past[2 * i], past[2 * i + 1]) for i, name in enumerate(self.layers)}
        env = {self.input: input_ids}
        for name, mod, keys, cached in self.plan:
            xs = [env[k] for k in keys]
            env[name] = mod(*xs, cache=given[name]) if cached else mod(*xs)
        return (env[self.logits], *(t for name in self.layers for t in given[name].present))


def check_layers(graph, layers) -> None:
    """BuildError unless every stateful node is causal attention with 1-D (or no) RoPE of fixed frequencies."""
    for name in layers:
        node = graph[name]
        p = node.params
        why = None
        if node.op not in ATTENTION_OPS or not registry.get(node.op).decode_state(p, graph.input_types(node)):
            why = f"its decode state is not attention K/V ({node.op})"
        elif p.layer_type == "conv":
            why = "it is a short convolution (LFM2): its decode state is the last inputs, not attention K/V"
        elif not p.causal:
            why = "its attention is not causal"
        elif p.rope == "2d":
            why = "it uses 2-D RoPE"
        elif p.rope_rescale_past is not None:
            why = "its RoPE is rescaled past a length (rope_rescale_past): positions depend on the call's length"
        elif p.rope_scaling is not None and p.rope_scaling.rope_type in ("dynamic", "longrope"):
            why = f"its RoPE scaling {p.rope_scaling.rope_type!r} depends on the sequence length"
        if why:
            raise BuildError(f"onnx-decode: node {name} cannot decode with past_key_values inputs: {why}; "
                             f"--target onnx exports the whole-sequence forward")


def example(step: DecodeStep, B: int, T: int, P: int, vocab: int, gen: torch.Generator) -> tuple:
    """Inputs of one call (the trace's): B rows, T new tokens after P past ones, the first row's first past
    position padding."""
    ids = torch.randint(0, vocab, (B, T), generator=gen)
    mask = torch.ones(B, P + T, dtype=torch.long)
    mask[0, 0] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, P:]
    past = []
    for name in step.layers:
        p = step.model.graph[name].params
        past += [torch.randn(B, p.kv, P, p.head_dim, generator=gen) for _ in range(2)]
    return (ids, mask, pos, *past)


#: the ONNX names of each input's dynamic axes (past tensors: (batch, kv_heads, past_seq, head_size))
AXES = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total_seq"},
        "position_ids": {0: "batch", 1: "seq"}, "past": {0: "batch", 2: "past_seq"}}
OUT_AXES = {"logits": {0: "batch", 1: "seq"}, "present": {0: "batch", 2: "total_seq"}}
_PREFIX = {"past_key_values": "past", "present": "present"}


def dynamic_shapes(n_layers: int) -> dict:
    """torch.export's dynamic shapes: every axis of AXES dynamic (Dim.DYNAMIC: total_seq = past_seq + seq is a
    relation torch.export finds and keeps, which named Dims could not state)."""
    dyn = lambda axes: {i: torch.export.Dim.DYNAMIC for i in axes}          # noqa: E731
    return {"input_ids": dyn(AXES["input_ids"]), "attention_mask": dyn(AXES["attention_mask"]),
            "position_ids": dyn(AXES["position_ids"]), "past": (dyn(AXES["past"]),) * (2 * n_layers)}


def name_axes(model) -> None:
    """Name the dynamic axes of the graph's inputs and outputs as AXES / OUT_AXES (torch.export's are s0, s1 + s2)."""
    import onnx_ir as ir
    for values, table in ((model.graph.inputs, AXES), (model.graph.outputs, OUT_AXES)):
        for v in values:
            axes = table[_PREFIX.get(v.name.split(".")[0], v.name)]
            dims = list(v.shape)
            for i, name in axes.items():
                dims[i] = ir.SymbolicDim(name)
            v.shape = ir.Shape(dims)


def write(compiled, out_dir: str | os.PathLike, weights: bool = False, seed: int = 0,
          weights_from: str | os.PathLike | None = None, key_map=()) -> list[str]:
    """Write model.onnx (+ model.onnx.data), report.json, onnx.json (and model.safetensors)."""
    from runtime_common.progress import steps
    from runtime_torch.weights import save_weights
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    compiled.raise_for_errors()
    path = os.path.join(out_dir, "model.onnx")
    with steps("building the torch model") as say:
        model = onnx_emit.torch_model(compiled, seed, weights_from, key_map)
        step = DecodeStep(model).eval()
        vocab = vocab_size(model)
        n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        gen = torch.Generator().manual_seed(seed)
        args = example(step, TRACE["B"], TRACE["T"], TRACE["P"], vocab, gen)
        say("tracing the decode step (torch.export)")
        try:
            with onnx_emit._quiet(), onnx_emit._no_stack_traces():
                program = torch.export.export(step, args, dynamic_shapes=dynamic_shapes(len(step.layers)),
                                              strict=False)
        except Exception as e:
            raise BuildError(f"torch.export could not trace the decode step: {onnx_emit._first_line(e)}") from e
        say("converting to ONNX")
        try:
            with onnx_emit._quiet():
                proto, how = onnx_convert.convert(program, step.input_names, step.output_names)
            name_axes(proto)
        except Exception as e:
            raise BuildError(f"the ONNX conversion failed: {onnx_emit._first_line(e)}") from e
        del program
        say("optimising the ONNX graph")
        onnx_convert.optimise(proto)
        say("writing model.onnx")
        external = n_bytes > onnx_emit.EXTERNAL_DATA_BYTES
        onnx_convert.save(proto, path, external)
        info = onnx_emit._interface(proto)
        del proto
        if weights:
            say("writing model.safetensors")
            save_weights(model, os.path.join(out_dir, "model.safetensors"))
        say("greedy decoding in torch (the reference)")
        prompt = prompt_of(vocab, seed)
        want_tokens, want = greedy(torch_runner(step), prompt, CHECK["steps"], _kv_shapes(step))
        layout = layout_of(step, vocab)
        del model, step
        gc.collect()
        say("greedy decoding in onnxruntime")
        got_tokens, got = greedy(ort_runner(path, check=True), prompt, CHECK["steps"], layout["kv_shapes"])
        diffs = compare(got, want, layout["output_names"])
        if got_tokens.tolist() != want_tokens.tolist():
            raise BuildError(f"onnx-decode: greedy tokens differ: onnxruntime {got_tokens.tolist()}, torch "
                             f"{want_tokens.tolist()}")
    genai = genai_config(compiled, layout, weights_from)
    info.update({"layout": {k: v for k, v in layout.items() if k != "layers"},
                 "genai_config": GENAI if isinstance(genai, dict) else f"not written: {genai}",
                 "check": {"batch": CHECK["B"], "prompt": CHECK["T"], "steps": CHECK["steps"],
                           "left_padding": (prompt[1] == 0).sum(-1).tolist(), "tokens": got_tokens.tolist(),
                           "max_abs_difference": diffs},
                 "tolerance": {"atol": ATOL, "rtol": RTOL}, "seed": seed, "external_data": external,
                 "conversion": how, **({"weights_from": os.path.abspath(weights_from)} if weights_from else {})})
    files = [("report.json", compiled.report), ("onnx.json", info)]
    files += [(GENAI, genai)] if isinstance(genai, dict) else []
    for name, text in ((name, json.dumps(obj, sort_keys=True, indent=2)) for name, obj in files):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir))


# --- genai_config.json ----------------------------------------------------------------------------------------------
GENAI = "genai_config.json"
TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def token_ids(weights_from) -> dict:
    """bos/eos/pad token ids from the Hugging Face files beside a checkpoint (generation_config.json first, then
    config.json and its text_config); {} without a checkpoint or files."""
    if weights_from is None:
        return {}
    folder = os.fspath(weights_from)
    folder = folder if os.path.isdir(folder) else os.path.dirname(folder)
    found: dict = {}
    for name in ("generation_config.json", "config.json"):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            continue
        for scope in (cfg, cfg.get("text_config") or {}) if isinstance(cfg, dict) else ():
            for k in TOKEN_KEYS:
                v = scope.get(k)
                ok = isinstance(v, int) or (isinstance(v, list) and v and all(isinstance(i, int) for i in v))
                if ok and k not in found:
                    found[k] = v
    return found


def genai_config(compiled, layout: dict, weights_from=None) -> dict | str:
    """onnxruntime-genai's configuration of the exported decoder (its v1 `model.decoder` layout, greedy search),
    or why it cannot be written."""
    if len(set(map(tuple, layout["kv_shapes"]))) != 1:
        return (f"onnxruntime-genai takes one key/value head count and head size for all layers; these have "
                f"{sorted(set(map(tuple, layout['kv_shapes'])))}")
    g = compiled.graph
    first = g[layout["layers"][0]]
    kv, head = layout["kv_shapes"][0]
    context = int(compiled.doc.context)
    tokens = {k: v for k, v in token_ids(weights_from).items() if all(
        0 <= i < layout["vocab_size"] for i in (v if isinstance(v, list) else [v]))}
    return {"model": {
        **tokens, "context_length": context, "type": "decoder", "vocab_size": layout["vocab_size"],
        "decoder": {"filename": "model.onnx", "head_size": head, "num_key_value_heads": kv,
                    "num_attention_heads": first.params.num_heads, "num_hidden_layers": layout["num_layers"],
                    "hidden_size": int(g.input_types(first)[0].shape[-1].const),
                    "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                    "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                               "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                               "past_value_names": "past_key_values.%d.value"},
                    "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                "present_value_names": "present.%d.value"}}},
        "search": {"do_sample": False, "num_beams": 1, "top_k": 1, "max_length": context,
                   "past_present_share_buffer": False}}        # the graph concatenates: past and present differ


# --- greedy decoding with either engine (the build's check; tests and bench/bench_onnx.py use it too) ---------------
def vocab_size(model) -> int:
    """The vocabulary the token ids index: the least bound that their consumers declare (`ids_bound`)."""
    g = model.graph
    name = next(n for n in model.input_names if g[n].out.kind == "ids")
    bounds = [b for c in g.consumers(name) if (b := registry.get(g[c].op).ids_bound(g[c].params)) is not None]
    return min(bounds, default=2)


def _kv_shapes(step: DecodeStep) -> list[tuple[int, int]]:
    return [(step.model.graph[n].params.kv, step.model.graph[n].params.head_dim) for n in step.layers]


def layout_of(step: DecodeStep, vocab: int) -> dict:
    kv = _kv_shapes(step)
    return {"input_names": step.input_names, "output_names": step.output_names, "num_layers": len(step.layers),
            "layers": step.layers, "kv_shapes": kv, "num_key_value_heads": sorted({k for k, _ in kv}),
            "head_size": sorted({h for _, h in kv}), "vocab_size": vocab}


def prompt_of(vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (2, T), attention_mask (2, T)): the first row left-padded by 2 tokens."""
    ids = torch.randint(0, vocab, (CHECK["B"], CHECK["T"]), generator=torch.Generator().manual_seed(seed + 1))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    ids[0, :2] = 0
    return ids, mask


def torch_runner(step: DecodeStep):
    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = step(*(torch.from_numpy(feed[n]) for n in step.input_names))
        return [t.numpy() for t in out]
    return run


def ort_runner(path: str, check: bool = False):
    sess = onnx_emit.session(path, check)
    names = [o.name for o in sess.get_outputs()]
    return lambda feed: sess.run(names, feed)


def greedy(run, prompt: tuple[torch.Tensor, torch.Tensor], steps: int, kv_shapes):
    """(tokens (B, steps), [outputs of each call]): the prompt, then `steps` greedy tokens, one call each, with
    `run(feed) -> [logits, present...]` (the presents fed back as the next call's past)."""
    ids, mask = (t.numpy().astype(np.int64) for t in prompt)
    B = ids.shape[0]
    past = [np.zeros((B, kv, 0, hs), np.float32) for kv, hs in kv_shapes for _ in range(2)]
    tokens, outs = [], []
    cur = ids
    for _ in range(steps):
        pos = (np.cumsum(mask, -1) - 1).clip(min=0)[:, mask.shape[1] - cur.shape[1]:]
        feed = {"input_ids": cur, "attention_mask": mask, "position_ids": pos.astype(np.int64)}
        feed.update({f"past_key_values.{i}.{kv}": past[2 * i + j] for i in range(len(kv_shapes))
                     for j, kv in enumerate(("key", "value"))})
        out = run(feed)
        outs.append(out)
        cur = out[0][:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens.append(cur)
        past = list(out[1:])
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
    return np.concatenate(tokens, axis=1), outs


def compare(got, want, names) -> dict[str, float]:
    """Largest |difference| per output name over all calls; BuildError past ATOL + RTOL |torch|."""
    out: dict[str, float] = {}
    for g_call, w_call in zip(got, want):
        for name, g, w in zip(names, g_call, w_call):
            if g.shape != w.shape:
                raise BuildError(f"onnx-decode: output {name} has shape {g.shape} in onnxruntime, {w.shape} in torch")
            d = float(np.max(np.abs(g - w))) if w.size else 0.0
            out[name] = max(out.get(name, 0.0), d)
            if not np.allclose(g, w, atol=ATOL, rtol=RTOL):
                raise BuildError(f"onnx-decode: output {name} differs from torch by up to {d:.3g} "
                                 f"(allowed {ATOL} + {RTOL} x |torch|)")
    return out
