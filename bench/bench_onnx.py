"""ONNX export and decoding, measured in one run.

    python bench/bench_onnx.py [--cases export,export-file,decode] [--repeats N] [--new N]

1. export: `--target onnx` of nanoVLM original_small (specs/nanovlm/original_small.json, 222M parameters, fp32)
   with seeded weights: wall time of compiler.emit.onnx.write (trace, convert, optimise, save, onnx.checker, the
   onnxruntime comparison) and its peak memory above the process before it (ru_maxrss), as a ratio to the weights'
   bytes. Each repeat is a fresh process. Targets (issue #16): <= 15 s, <= 2x the weights' bytes. Also printed:
   the layers traced once for all their copies (compiler/emit/onnx_repeat.py);
2. export-file: the same from a weights file (model.safetensors written first, untimed; `weights_from`);
3. decode: a SmolLM2-135M-size llama (random weights, seeded) exported with `--target onnx-decode`, then greedy
   decoding of a 32-token prompt, batch 1: onnxruntime (the exported graph, presents fed back as past_key_values)
   vs omnic-torch's `generate` (packed weights, preallocated KV cache), same weights, tokens compared, run
   alternately; tokens/s include the prefill. With onnxruntime-genai installed, its own Generator on the same
   folder (the genai_config.json the build writes) is raced against omnic-torch as well.
Prints the load average before and after: timings only mean something on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "specs/nanovlm/original_small.json")

CHILD = r"""
import json, os, resource, sys, time
import compiler
from compiler.emit import onnx as emit
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
spec, out, weights_from = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
c = compiler.compile(spec).raise_for_errors()
base = rss()
t = time.perf_counter()
emit.write(c, out, weights_from=weights_from)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
info = json.load(open(os.path.join(out, "onnx.json")))
print(json.dumps({"s": dt, "peak": peak - base, "weights": c.report["params"]["total"] * 4,
                  "conversion": info["conversion"], "diff": max(info["max_abs_difference"].values()),
                  "once": info.get("traced_once", {}), "failed": info.get("traced_once_failed")}))
"""

SAVE = r"""
import sys, compiler, runtime_torch
from runtime_torch.weights import save_weights
save_weights(runtime_torch.build(compiler.compile(sys.argv[1]).raise_for_errors(), seed=0), sys.argv[2])
"""


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def spread(xs: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(statistics.median(xs))} (range {fmt.format(min(xs))}-{fmt.format(max(xs))}, n={len(xs)})"


def child(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMNIC_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"child failed:\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""


def bench_export(repeats: int, from_file: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        extra = []
        if from_file:
            path = os.path.join(tmp, "model.safetensors")
            child(SAVE, SPEC, path)
            extra = [path]
        runs = []
        for i in range(repeats):
            out = os.path.join(tmp, f"out{i}")
            runs.append(json.loads(child(CHILD, SPEC, out, *extra)))
            subprocess.run(["rm", "-rf", out])
    w = runs[0]["weights"]
    name = "export-file" if from_file else "export"
    print(f"{name}: nanoVLM original_small ({w / 1e9:.2f} GB of fp32 weights"
          f"{', from a safetensors file' if from_file else ', seeded'}), conversion {runs[0]['conversion']}, "
          f"max |onnx - torch| {max(r['diff'] for r in runs):.2g}")
    once = ", ".join(f"{k} x{n}" for k, n in runs[0].get("once", {}).items())
    print(f"  traced once: {once or 'none'}" + (f" (failed: {runs[0]['failed']})" if runs[0].get("failed") else ""))
    print(f"  time {spread([r['s'] for r in runs])} s   (target <= 15 s)")
    print(f"  peak memory above the process before it: {spread([r['peak'] / 1e9 for r in runs], '{:.2f}')} GB = "
          f"{spread([r['peak'] / w for r in runs], '{:.2f}')}x the weights   (target <= 2x)")


def bench_decode(repeats: int, new: int) -> None:
    import torch
    from transformers import LlamaConfig

    import compiler
    import runtime_torch as rt
    from compiler.emit import onnx_decode
    from compiler.importers import spec_from_hf_config
    from runtime_torch.generate import generate
    from bench_torch import race                      # the same alternate timing as the torch benchmark
    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True,
                      max_position_embeddings=8192, rms_norm_eps=1e-5)
    c = compiler.compile(spec_from_hf_config(cfg.to_dict()), context=512, batch=1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        onnx_decode.write(c, tmp, seed=0)
        t_export = time.perf_counter() - t
        model = rt.build(c, seed=0).eval()
        kv = [(3, 64)] * 30
        prompt = torch.randint(0, 49152, (1, 32), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(prompt)
        run = onnx_decode.ort_runner(os.path.join(tmp, "model.onnx"))
        ort_gen = lambda: onnx_decode.greedy(run, (prompt, mask), new, kv)[0]        # noqa: E731
        torch_gen = lambda: generate(model, prompt, new)[:, 32:]                      # noqa: E731
        with torch.inference_mode():
            same = ort_gen().tolist() == torch_gen().tolist()
            t_ort, t_torch = race(ort_gen, torch_gen, repeats)     # alternately: a change of load hits both alike
            genai = genai_runner(tmp, prompt, new)
            if genai is not None:
                same_genai = genai() == torch_gen()[0].tolist()
                t_genai, t_torch2 = race(genai, torch_gen, repeats)
    tok_ort, tok_torch = [new / t for t in t_ort], [new / t for t in t_torch]
    print(f"decode: SmolLM2-135M size, fp32, batch 1, prompt 32 + {new} greedy tokens "
          f"({'same tokens' if same else 'TOKENS DIFFER'}); onnx-decode export {t_export:.1f} s")
    print(f"  onnxruntime {spread(tok_ort)} tok/s   omnic-torch {spread(tok_torch)} tok/s   "
          f"ratio {spread([a / b for a, b in zip(tok_ort, tok_torch)], '{:.2f}')}x")
    if genai is None:
        print("  onnxruntime-genai: not installed")
        return
    tok_genai, tok_torch2 = [new / t for t in t_genai], [new / t for t in t_torch2]
    ratio = spread([a / b for a, b in zip(tok_genai, tok_torch2)], "{:.2f}")
    print(f"  onnxruntime-genai Generator {spread(tok_genai)} tok/s "
          f"({'same tokens' if same_genai else 'TOKENS DIFFER'})   omnic-torch {spread(tok_torch2)} tok/s   "
          f"ratio {ratio}x")


def genai_runner(folder: str, prompt, new: int):
    """A function that decodes `new` greedy tokens after `prompt` (1, T) with onnxruntime-genai's Generator on the
    exported folder (its genai_config.json), or None without onnxruntime-genai."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        return None
    import numpy as np
    model = og.Model(folder)
    ids = np.asarray(prompt, dtype=np.int32)

    def run() -> list[int]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=ids.shape[1] + new, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        out = []
        while not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        return out
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="export,export-file,decode")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new", type=int, default=64, help="tokens generated per decode run")
    a = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, {load()}")
    for case in a.cases.split(","):
        if case == "export":
            bench_export(a.repeats, from_file=False)
        elif case == "export-file":
            bench_export(a.repeats, from_file=True)
        elif case == "decode":
            bench_decode(a.repeats, a.new)
        else:
            raise SystemExit(f"unknown case {case!r}: export, export-file, decode")
        print(f"  ({load()})")


if __name__ == "__main__":
    main()
