"""The MLX runtime against its peer and against the compiler's memory figures, measured in one run.

1. Speed: forward time of omnic-MLX vs mlx-lm (`mlx_lm.models.llama`) on a SmolLM2-135M-size Llama (random weights,
   the same in both, batch 1 x 256 tokens, fp32), interleaved repetitions, median; the logits are checked equal.
2. Memory: for every shipped spec under specs/ (shrunk through overrides: stacks to 2 layers, batch 1, a short
   context), the compiler's predicted inference peak (report, fp32) vs `mx.get_peak_memory()` over a real forward
   (`runtime_mlx.memory`). A forward holds no decode state, so the prediction compared is weights + activation peak
   (`memory.inference.fp32 - memory.decode_state.fp32`); graphs that `generate` can decode (decoders and VLMs) run
   a prefill that keeps its KV / conv caches and are compared with the full `memory.inference.fp32`. Specs that fail to compile, build or run are listed as
   skipped with the reason.
3. Generation: omnic-MLX `runtime_mlx.generate` vs mlx-lm's `generate_step` (the loop under `mlx_lm.generate`) on
   the same SmolLM2-135M-size Llama: random weights written once to a safetensors file and loaded by both, fp32
   and bf16, a prompt of --prompt tokens then --new greedy tokens; tokens/s = new tokens / wall time of the whole
   call (prefill included, the same work in both), repetitions interleaved (the order alternating), median with
   min-max, the ratio of medians and each repetition's ratio; greedy tokens compared. A third row runs omnic-MLX
   with `pack=False` (runtime_mlx/pack.py off): what the fused products give on this machine.
Usage: python bench/bench_mlx.py [--tokens 256] [--reps 5] [--context 128] [--prompt 32] [--new 64] [--gen-reps 3]
       [--skip-speed] [--skip-memory] [--skip-generate]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time

import runtime_mlx  # noqa: F401  (first: the OpenBLAS preload precedes `import mlx`)
import mlx.core as mx
import numpy as np

from compiler import compile
from runtime_mlx import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2_135M = dict(family="llama", vocab_size=49152, hidden=576, layers=30, heads=9, kv_heads=3, ff_dim=1536,
                    rope_theta=100000.0, norm_eps=1e-5, tie=True)
STACK_KEYS = ("depth", "repeat", "layers")      # params that count stacked layers, shrunk to SHRINK_TO
SHRINK_TO = 2


# --- 1. speed ---------------------------------------------------------------------------------------------------------
SMOLLM2_SPEC = {"name": "SmolLM2-135M-size", "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
                "layers": [{"id": "lm", "type": "DecoderLM", "params": SMOLLM2_135M}]}


def mlx_lm_llama(weights: list):
    """mlx-lm's `models/llama.py` Model of the SmolLM2-135M-size config holding `weights` [(our name, array)]."""
    from mlx_lm.models import llama
    p = SMOLLM2_135M
    args = llama.ModelArgs(model_type="llama", hidden_size=p["hidden"], num_hidden_layers=p["layers"],
                           intermediate_size=p["ff_dim"], num_attention_heads=p["heads"],
                           num_key_value_heads=p["kv_heads"], rms_norm_eps=p["norm_eps"], vocab_size=p["vocab_size"],
                           rope_theta=p["rope_theta"], tie_word_embeddings=True)
    peer = llama.Model(args)
    peer.load_weights([(k.removeprefix("lm."), v) for k, v in weights], strict=True)
    mx.eval(peer.parameters())
    return peer


def smollm_pair():
    ours = runtime_mlx.build(compile(SMOLLM2_SPEC).raise_for_errors(), seed=0)
    return ours, mlx_lm_llama(list(ours.named_parameters().items()))


def bench_speed(tokens: int, reps: int) -> None:
    ours, peer = smollm_pair()
    ids = mx.array(np.random.RandomState(0).randint(0, SMOLLM2_135M["vocab_size"], (1, tokens)))
    run = {"omnic-MLX": lambda: ours(input_ids=ids)["lm.lm_head"], "mlx-lm": lambda: peer(ids)}
    a, b = run["omnic-MLX"](), run["mlx-lm"]()
    diff = mx.abs(a - b).max().item()
    for f in run.values():                                   # warm-up
        mx.eval(f())
    times = {k: [] for k in run}
    for _ in range(reps):
        for k, f in run.items():
            t = time.perf_counter()
            mx.eval(f())
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n1. Forward, SmolLM2-135M-size Llama, 1 x {tokens} tokens, fp32, median of {reps} "
          f"(BLAS: {runtime_mlx.BLAS['path'] or runtime_mlx.BLAS['reason']})")
    print(f"{'runtime':<12} {'ms':>9} {'tokens/s':>10}")
    for k, v in med.items():
        print(f"{k:<12} {v * 1e3:9.1f} {tokens / v:10.0f}")
    print(f"ratio omnic-MLX / mlx-lm: {med['omnic-MLX'] / med['mlx-lm']:.3f}   max |logit diff| {diff:.2e}   "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: absolute times scale with it, the "
          f"interleaved ratio much less)")


# --- 3. generation -----------------------------------------------------------------------------------------------------
def generation_pair(path: str, dtype):
    """omnic-MLX and mlx-lm models of one safetensors file, cast to dtype (ours not yet packed)."""
    ours = runtime_mlx.build(compile(SMOLLM2_SPEC).raise_for_errors(), init=False)
    runtime_mlx.load_weights(ours, path)
    peer = mlx_lm_llama(list(mx.load(path).items()))
    ours.set_dtype(dtype)
    peer.set_dtype(dtype)
    mx.eval(ours.parameters(), peer.parameters())
    return ours, peer


def bench_generate(prompt: int, new: int, reps: int) -> None:
    import tempfile
    from mlx_lm.generate import generate_step
    from runtime_mlx.generate import generate
    ids = mx.array(np.random.RandomState(0).randint(0, SMOLLM2_135M["vocab_size"], (1, prompt)))
    print(f"\n3. Generation, SmolLM2-135M-size Llama (random weights, one safetensors file loaded by both), prompt "
          f"{prompt} + {new} greedy tokens, tokens/s = {new} / wall time of the call, {reps} interleaved repetitions")
    print(f"{'dtype':<9} {'runtime':<12} {'tok/s median':>12} {'min-max':>13}   {'ratio omnic/mlx-lm (per rep)':<30} "
          f"{'tokens equal':>12}  load")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "smollm2-135m-size.safetensors")
        runtime_mlx.save_weights(runtime_mlx.build(compile(SMOLLM2_SPEC).raise_for_errors(), seed=0), path)
        for dtype in (mx.float32, mx.bfloat16):
            ours, peer = generation_pair(path, dtype)
            plain = generation_pair(path, dtype)[0]                  # a second copy, never packed
            run = {"omnic-MLX": lambda: generate(ours, ids, new)[0, prompt:].tolist(),
                   "mlx-lm": lambda: [t for t, _ in generate_step(ids[0], peer, max_tokens=new)],
                   "unpacked": lambda: generate(plain, ids, new, pack=False)[0, prompt:].tolist()}
            toks = {k: f() for k, f in run.items()}                 # warm-up, and the tokens compared
            same = next((i for i, (a, b) in enumerate(zip(toks["omnic-MLX"], toks["mlx-lm"])) if a != b), new)
            assert toks["unpacked"] == toks["omnic-MLX"] or dtype != mx.float32, "packing changed greedy tokens"
            tps = {k: [] for k in run}
            loads = []
            for r in range(reps):
                for k in (list(run) if r % 2 == 0 else list(run)[::-1]):
                    t = time.perf_counter()
                    run[k]()
                    tps[k].append(new / (time.perf_counter() - t))
                loads.append(os.getloadavg()[0])
            med = {k: statistics.median(v) for k, v in tps.items()}
            per_rep = [a / b for a, b in zip(tps["omnic-MLX"], tps["mlx-lm"])]
            name = "fp32" if dtype == mx.float32 else "bf16"
            for k, v in tps.items():
                ratio = (f"{med['omnic-MLX'] / med['mlx-lm']:.3f} ({', '.join(f'{x:.2f}' for x in per_rep)})"
                         if k == "omnic-MLX" else f"{med[k] / med['mlx-lm']:.3f}" if k == "unpacked" else "")
                eq = f"{same}/{new}" if k == "omnic-MLX" else ""
                print(f"{name:<9} {k:<12} {med[k]:12.1f} {min(v):6.1f}-{max(v):<6.1f}   {ratio:<30} {eq:>12}  "
                      f"{min(loads):.1f}-{max(loads):.1f}")
            del ours, peer, plain
    print(f"(unpacked: omnic-MLX with pack=False, everything else the same: what fusing q|k|v and gate|up gives. "
          f"tokens equal: the leading greedy tokens that agree; bf16 rounds RoPE and attention differently in the two "
          f"implementations, so they may part after a while. {os.cpu_count()} cores, BLAS: "
          f"{runtime_mlx.BLAS['path'] or runtime_mlx.BLAS['reason']})")


# --- 2. memory --------------------------------------------------------------------------------------------------------
def shrink_overrides(path: str) -> dict:
    """Overrides that cut every stack in the spec (and in its includes) to SHRINK_TO layers."""
    data = json.load(open(path))
    out = {}
    for i, layer in enumerate(data.get("layers", [])):
        params = dict(layer.get("params", {}))
        if "include" in layer:
            comp = json.load(open(os.path.join(os.path.dirname(path), layer["include"])))
            params = {**comp.get("params", {}), **params}
        for key, v in params.items():
            base = f"layers[{i}].params.{key}"
            if key in STACK_KEYS and isinstance(v, int) and v > SHRINK_TO:
                out[base] = SHRINK_TO
            elif key == "layer_types" and isinstance(v, list) and len(v) > SHRINK_TO:
                out[base] = v[:SHRINK_TO]
            elif isinstance(v, dict):                        # nested configs (FoveatedVLM's dino / llm)
                for k2, v2 in v.items():
                    if k2 in STACK_KEYS and isinstance(v2, int) and v2 > SHRINK_TO:
                        out[f"{base}.{k2}"] = SHRINK_TO
    return out


def make_inputs(c, seed: int = 0) -> dict:
    """Random inputs at the compiled sizes; ids hold exactly the placeholders every MergeImageTokens needs."""
    g, rng, s = c.graph, np.random.RandomState(seed), c.settings
    env = {"B": s["batch"], "T": s["context"], "F": s["frames"]}
    out = {}
    for n in g.nodes():
        if n.op != "Input":
            continue
        shape = [int(d.eval(env)) for d in n.out.shape]
        if n.out.dtype == "int":
            vocab = min([getattr(g[u].params, a) for u in g.consumers(n.name) for a in ("num_embeddings", "vocab_size")
                         if isinstance(getattr(g[u].params, a, None), int)] or [2])
            ids = rng.randint(0, vocab, size=shape)
            for u in g.consumers(n.name):
                if g[u].op == "MergeImageTokens":
                    tok = g[u].params.image_token_id
                    ids[ids == tok] = (tok + 1) % vocab
                    k = int(g.input_types(g[u])[1].shape[1].eval(env))
                    ids[:, :k] = tok
            out[n.name] = mx.array(ids)
        elif n.out.kind == "scalar":
            out[n.name] = mx.array(rng.rand(*shape).astype(np.float32))
        else:
            out[n.name] = mx.array(rng.randn(*shape).astype(np.float32))
    return out


def measure_spec(path: str, context: int) -> tuple:
    """(mode, report weights, MLX weights, predicted, measured, other live bytes) for one shrunk spec."""
    from runtime_mlx.generate import DecodeSession
    c = compile(path, shrink_overrides(path), batch=1, context=context, frames=2, format="fp32")
    if not c.ok:
        raise ValueError("; ".join(d.message for d in c.errors)[:120])
    model = runtime_mlx.build(c, seed=0)
    rep = c.report["memory"]
    inputs = make_inputs(c)
    try:
        session = DecodeSession(model)
    except ValueError:
        session = None
    if session is None:
        res = memory.measure_forward_peak(model, inputs)
        mode, predicted = "forward", rep["inference"]["fp32"] - rep["decode_state"]["fp32"]
    else:
        ids = inputs.pop(session.input)
        res = memory.measure_prefill(model, ids, session.logits, **inputs)
        inputs[session.input] = ids
        mode, predicted = "prefill+KV", rep["inference"]["fp32"]
    # what was alive before the forward besides this model's weights and inputs (should be ~0)
    other = res["before"] - res["weights"] - sum(v.nbytes for v in inputs.values())
    return mode, rep["weights"]["fp32"], res["weights"], predicted, res["peak"], other


def bench_memory(context: int) -> None:
    import gc
    paths = sorted(p for p in glob.glob(os.path.join(ROOT, "specs", "**", "*.json"), recursive=True)
                   if os.path.basename(p) != "schema.json" and os.sep + "components" + os.sep not in p)
    rows, skipped = [], []
    for path in paths:
        name = os.path.relpath(path, os.path.join(ROOT, "specs"))
        gc.collect()
        mx.clear_cache()
        try:
            rows.append((name,) + measure_spec(path, context))
        except Exception as e:                                 # a bench reports, it does not stop
            skipped.append((name, f"{type(e).__name__}: {e}"[:140]))
    print(f"\n2. Memory, shipped specs shrunk to {SHRINK_TO} layers per stack, batch 1, context {context}, frames 2, "
          f"fp32 (MB = 1e6 bytes; 'other' = bytes alive before the run besides its weights and inputs)")
    print(f"{'spec':<28} {'mode':<11} {'weights rep':>11} {'weights MLX':>11} {'predicted':>10} {'measured':>10} "
          f"{'meas/pred':>9} {'other':>6}")
    for name, mode, wr, wm, pred, peak, other in rows:
        print(f"{name:<28} {mode:<11} {wr / 1e6:11.1f} {wm / 1e6:11.1f} {pred / 1e6:10.1f} {peak / 1e6:10.1f} "
              f"{peak / pred:9.3f} {other / 1e6:6.1f}")
    for name, why in skipped:
        print(f"{name:<28} skipped: {why}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--gen-reps", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-generate", action="store_true")
    a = ap.parse_args()
    if not a.skip_speed:
        bench_speed(a.tokens, a.reps)
    if not a.skip_memory:
        bench_memory(a.context)
    if not a.skip_generate:
        bench_generate(a.prompt, a.new, a.gen_reps)


if __name__ == "__main__":
    main()
