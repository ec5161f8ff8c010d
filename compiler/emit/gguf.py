"""GGUF export of a llama-family DecoderLM with the `gguf` package: what llama.cpp loads as architecture 'llama'.

    write(compiled, out_dir, seed=0, weights_from=None, key_map=(), quant=plan)  # model.gguf, report.json
    listing("model.gguf")   # [(name, GGML type, shape, bytes)] as gguf's GGUFReader reads the file

The weights are the torch runtime's (seeded, or a checkpoint loaded through its key map, as `--weights-from`) in
float32; the
plan (`compiler.quantise`, target gguf) says which are quantised. Done as llama.cpp's `convert_hf_to_gguf.py` does
for LlamaModel:
  * names by gguf's own table (`gguf.get_tensor_name_map(MODEL_ARCH.LLAMA, blocks)`: `model.layers.0.self_attn.
    q_proj.weight` -> `blk.0.attn_q.weight`); a head tied to its embedding is not written (llama.cpp reads
    `token_embd.weight` for it);
  * the rows of q_proj and k_proj permuted from transformers' rotate-half RoPE order to llama.cpp's interleaved
    pairs (`permute`, undone by `unpermute` when reading back);
  * 2-D weights quantised by `gguf.quants.quantize` (Q8_0: blocks of 32 int8 values and an fp16 scale), 1-D
    tensors (norms) in float32: the accounting's q8_0 figure;
  * metadata: general.architecture / name / file_type / quantization_version, llama.{context_length,
    embedding_length, block_count, feed_forward_length, attention.head_count, attention.head_count_kv,
    attention.key_length, attention.value_length, attention.layer_norm_rms_epsilon, rope.dimension_count,
    rope.freq_base, vocab_size}, and tokenizer.ggml.model = "no_vocab" (gguf's NoVocab: a spec has no tokenizer;
    llama.cpp runs such a model on token ids).
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

MODEL_FILE = "model.gguf"
FILE_TYPES = {"q8_0": "MOSTLY_Q8_0"}
QTYPES = {"q8_0": "Q8_0"}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q/k projection from rotate-half order to interleaved pairs (convert_hf_to_gguf's LlamaModel)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _lm_settings(graph) -> dict:
    nodes = [n for n in graph.nodes() if n.op != "Input"]
    embed, blocks, norm, head = nodes[0], nodes[1:-2], nodes[-2], nodes[-1]
    b = blocks[0].params
    return {"prefix": embed.name.rsplit(".", 2)[0], "vocab": embed.params.num_embeddings, "hidden": b.embed_dim,
            "blocks": len(blocks), "ff": b.ff_dim, "heads": b.num_heads, "kv_heads": b.num_kv_heads,
            "head_dim": b.head_dim, "eps": b.norm_eps, "theta": b.rope_theta, "tied": bool(head.params.tied_name),
            "norm_eps": norm.params.eps}


def float_weights(compiled, seed: int = 0, weights_from: Optional[str] = None, key_map=()) -> dict[str, np.ndarray]:
    """{name: float32 array in torch layout} of every owned tensor: seeded, or loaded from `weights_from` (a
    checkpoint file or folder, through `key_map`)."""
    import runtime_torch
    model = runtime_torch.build(compiled, seed=seed, init=weights_from is None)
    if weights_from is not None:
        runtime_torch.load_checkpoint(model, weights_from, key_map)
    ties = model.ties
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items() if k not in ties}


def gguf_tensors(compiled, plan, arrays: dict[str, np.ndarray]):
    """[(gguf name, data, raw dtype or None)] in file order: quantised as the plan says, q/k permuted."""
    import gguf
    s = _lm_settings(compiled.graph)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, s["blocks"])
    qtype = getattr(gguf.GGMLQuantizationType, QTYPES[plan.scheme.quantize])
    out = []
    for name, w in arrays.items():
        key = name[len(s["prefix"]) + 1:] if s["prefix"] else name
        new = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"{name}: no GGUF name for {key!r} in gguf's llama table")
        if key.endswith("self_attn.q_proj.weight"):
            w = permute(w, s["heads"])
        elif key.endswith("self_attn.k_proj.weight"):
            w = permute(w, s["kv_heads"])
        if name in plan.quantised:
            out.append((new, gguf.quants.quantize(w, qtype), qtype))
        else:
            out.append((new, w.astype(np.float32), None))
    return out


def write(compiled, out_dir: str | os.PathLike, weights: bool = True, seed: int = 0,
          weights_from: Optional[str] = None, key_map=(), quant=None) -> list[str]:
    """Write model.gguf and report.json into `out_dir` (see the module docstring); returns the paths."""
    import gguf
    from compiler.quantise import quant_plan
    out_dir = os.fspath(out_dir)
    plan = quant or quant_plan(compiled, "gguf", "q8_0")
    s = _lm_settings(compiled.graph)
    path = os.path.join(out_dir, MODEL_FILE)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(compiled.report["name"])
    w.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[plan.scheme.quantize]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(compiled.report["settings"]["context"])
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["blocks"])
    w.add_feed_forward_length(s["ff"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_dimension_count(s["head_dim"])
    w.add_rope_freq_base(s["theta"])
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_vocab_size(s["vocab"])
    w.add_tokenizer_model("no_vocab")
    for name, data, raw in gguf_tensors(compiled, plan, float_weights(compiled, seed, weights_from, key_map)):
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rep = os.path.join(out_dir, "report.json")
    with open(rep, "w", encoding="utf-8") as f:
        f.write(json.dumps(compiled.report, sort_keys=True, indent=2) + "\n")
    return [path, rep]


def listing(path: str | os.PathLike) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, GGML type, shape as GGUF stores it (innermost first), bytes) of every tensor, read by GGUFReader."""
    import gguf
    r = gguf.GGUFReader(os.fspath(path))
    return [(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_bytes)) for t in r.tensors]


def read_float(path: str | os.PathLike, heads: int, kv_heads: int) -> dict[str, np.ndarray]:
    """{GGUF name: float32 array in torch layout} (dequantised, q/k rows back in transformers' order)."""
    import gguf
    r = gguf.GGUFReader(os.fspath(path))
    out = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        a = a.reshape(tuple(int(d) for d in reversed(t.shape)))
        if t.name.endswith("attn_q.weight"):
            a = unpermute(a, heads)
        elif t.name.endswith("attn_k.weight"):
            a = unpermute(a, kv_heads)
        out[t.name] = a
    return out
