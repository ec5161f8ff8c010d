"""Quantised builds beside fp32, measured in one run: quality, decode speed and the bytes against the accounting.

A SmolLM2-135M-size Llama (random weights from the seed, N(0, 0.02); tied head), every build from the same weights:
  MLX    fp32, mlx-4bit (g64), mlx-8bit (g64): `runtime_mlx.quantize`; and mlx-lm's own llama model holding the same
         bf16 weights, quantised by mlx-lm's `quantize_model` (4-bit, g64), the peer for decode speed;
  torch  fp32, torchao-int8, torchao-int4-g64 (576 is not a multiple of torchao's default group 128);
  GGUF   q8_0: the file's tensors dequantised by gguf and run in the torch runtime (quality only: no llama.cpp here).
Per build: weight bytes (live, and the report's `memory.weights[format]`), logit error against the same runtime's
fp32 build over a 64-token prompt (max and mean |difference|), greedy-token agreement (the fraction of positions
where the build's next token equals fp32's, teacher-forced along fp32's greedy continuation of 32 tokens), and
decode tokens/s (greedy, 32 new tokens after a 16-token prompt, median of --reps).
Usage: python bench/bench_quant.py [--reps 3] [--new 32]. Prints `uptime` first: timings on a loaded machine vary.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import numpy as np
import torch

import runtime_torch
from compiler import compile
from compiler.quantise import quant_plan
from runtime_mlx import generate as mlx_generate
from runtime_mlx import quantize as mq
from runtime_torch import generate as torch_generate
from runtime_torch import quantize as tq

P = dict(family="llama", vocab_size=49152, hidden=576, layers=30, heads=9, kv_heads=3, ff_dim=1536,
         rope_theta=100000.0, norm_eps=1e-5, tie=True)
SPEC = {"name": "SmolLM2-135M-size", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
        "layers": [{"id": "lm", "type": "DecoderLM", "params": P}]}
HEAD = "lm.lm_head"


T0 = time.perf_counter()


def step(what: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {what}", flush=True)


def report_bytes(fmt: str) -> int:
    return compile(SPEC, format=fmt).raise_for_errors().report["memory"]["weights"][fmt]


def quality(logits, ref_logits) -> tuple[float, float, float]:
    a, b = np.asarray(logits, np.float64), np.asarray(ref_logits, np.float64)
    d = np.abs(a - b)
    agree = float((a.argmax(-1) == b.argmax(-1)).mean())
    return float(d.max()), float(d.mean()), agree


def timed(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def mlx_lm_peer(ours_bf16):
    """mlx-lm's llama with the same bf16 weights, quantised by mlx-lm (4-bit, group 64)."""
    from mlx_lm.models import llama
    from mlx_lm.utils import quantize_model
    args = llama.ModelArgs(model_type="llama", hidden_size=P["hidden"], num_hidden_layers=P["layers"],
                           intermediate_size=P["ff_dim"], num_attention_heads=P["heads"],
                           num_key_value_heads=P["kv_heads"], rms_norm_eps=P["norm_eps"], vocab_size=P["vocab_size"],
                           rope_theta=P["rope_theta"], tie_word_embeddings=True)
    peer = llama.Model(args)
    peer.load_weights([(k.removeprefix("lm."), v) for k, v in ours_bf16.named_parameters().items()], strict=True)
    peer, _ = quantize_model(peer, {}, 64, 4)
    mx.eval(peer.parameters())
    return peer


def mlx_lm_decode(peer, prompt, new: int) -> list[int]:
    from mlx_lm.models.cache import make_prompt_cache
    cache = make_prompt_cache(peer)
    logits = peer(prompt, cache=cache)
    out = []
    for _ in range(new):
        nxt = mx.argmax(logits[:, -1], axis=-1, keepdims=True)
        mx.eval(nxt)
        out.append(nxt.item())
        logits = peer(nxt, cache=cache)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new", type=int, default=32)
    a = ap.parse_args()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    c = compile(SPEC).raise_for_errors()
    rng = np.random.RandomState(0)
    prompt = rng.randint(0, P["vocab_size"], size=(1, 16))
    rows = []

    # --- MLX ---------------------------------------------------------------------------------------------------------
    step("mlx fp32 reference")
    ref = runtime_mlx.build(c, seed=0)
    seq = mlx_generate.generate(ref, mx.array(prompt), a.new)            # fp32's greedy continuation
    full = mx.array(np.asarray(seq))
    ref_logits = ref(input_ids=full)[HEAD].astype(mx.float32)
    mx.eval(ref_logits)

    def mlx_row(name, model, fmt):
        step(name)
        lg = model(input_ids=full)[HEAD].astype(mx.float32)
        mx.eval(lg)
        mx_err, mean_err, agree = quality(lg, ref_logits)
        t = timed(lambda: mlx_generate.generate(model, mx.array(prompt), a.new), a.reps)
        live = mq.stored_bytes(model) if fmt != "fp32" else sum(
            x.nbytes for x in model.named_parameters().values())
        rows.append((name, fmt, live, report_bytes(fmt), mx_err, mean_err, agree, a.new / t))

    mlx_row("mlx fp32", ref, "fp32")
    for bits in ("4", "8"):
        plan = quant_plan(c, "mlx", bits)
        mlx_row(f"mlx {bits}-bit g64", mq.quantise(runtime_mlx.build(c, seed=0), plan), plan.fmt.name)
    step("mlx-lm peer")
    bf16 = runtime_mlx.build(c, seed=0, dtype="bfloat16")
    peer = mlx_lm_peer(bf16)
    lg = peer(full).astype(mx.float32)
    mx.eval(lg)
    mx_err, mean_err, agree = quality(lg, ref_logits)
    t = timed(lambda: mlx_lm_decode(peer, mx.array(prompt), a.new), a.reps)
    from mlx.utils import tree_flatten
    rows.append(("mlx-lm 4-bit g64 (peer)", "mlx-4bit", sum(x.nbytes for _, x in tree_flatten(peer.parameters())),
                 report_bytes("mlx-4bit"), mx_err, mean_err, agree, a.new / t))
    del ref, bf16, peer

    # --- torch -------------------------------------------------------------------------------------------------------
    torch.manual_seed(0)
    tref = runtime_torch.build(c, seed=0).eval()
    tfull = torch.from_numpy(np.asarray(seq))
    with torch.no_grad():
        tref_logits = tref(input_ids=tfull)[HEAD].float().numpy()

    def torch_row(name, model, fmt, timing=True):
        step(name)
        with torch.no_grad():
            lg = model(input_ids=tfull)[HEAD].float().numpy()
        mx_err, mean_err, agree = quality(lg, tref_logits)
        t = timed(lambda: torch_generate.generate(model, torch.from_numpy(prompt), a.new), a.reps) if timing else 0
        live = tq.stored_bytes(model)
        rows.append((name, fmt, live, report_bytes(fmt), mx_err, mean_err, agree, a.new / t if t else float("nan")))

    torch_row("torch fp32", tref, "fp32")
    for q, g in (("int8", None), ("int4", 64)):
        plan = quant_plan(c, "torch", q, g)
        torch_row(f"torch torchao {q}", tq.quantise(runtime_torch.build(c, seed=0).eval(), plan), plan.fmt.name)

    # --- GGUF (quality of the file's values, run by the torch runtime) ----------------------------------------------
    step("gguf q8_0")
    import gguf
    import tempfile
    from compiler.emit import gguf as emit_gguf
    plan = quant_plan(c, "gguf", "q8_0")
    with tempfile.TemporaryDirectory() as d:
        path = emit_gguf.write(c, d, seed=0, quant=plan)[0]
        gbytes = sum(r[3] for r in emit_gguf.listing(path))
        deq = emit_gguf.read_float(path, P["heads"], P["kv_heads"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, P["layers"])
    gm = runtime_torch.build(c, init=False).eval()
    gm.load_state_dict({k: torch.from_numpy(deq[names.get_name(k[3:], try_suffixes=(".weight",))])
                        for k in gm.state_dict() if k not in gm.ties}, strict=False)
    torch_row("gguf q8_0 (dequantised)", gm, "q8_0", timing=False)
    rows[-1] = rows[-1][:2] + (gbytes,) + rows[-1][3:]

    print(f"\nSmolLM2-135M-size Llama, random weights; logits over {full.shape[1]} tokens vs the same runtime's fp32; "
          f"decode {a.new} tokens after 16, median of {a.reps}")
    print(f"{'build':26} {'format':16} {'bytes (built)':>14} {'bytes (report)':>14} {'max |dl|':>9} "
          f"{'mean |dl|':>9} {'agree':>6} {'tok/s':>7}")
    for r in rows:
        print(f"{r[0]:26} {r[1]:16} {r[2]:>14,} {r[3]:>14,} {r[4]:>9.4f} {r[5]:>9.5f} {r[6]:>6.3f} {r[7]:>7.1f}")
    by = {r[0]: r for r in rows}
    q4, peer_r, f32 = by["mlx 4-bit g64"], by["mlx-lm 4-bit g64 (peer)"], by["mlx fp32"]
    print(f"\nMLX 4-bit decode: {q4[7] / f32[7]:.2f}x omnic fp32, {q4[7] / peer_r[7]:.2f}x mlx-lm's 4-bit model")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    os.environ.setdefault("OMNIC_PROGRESS", "0")
    main()
