"""PyTorch runtime speed against transformers and against this machine's own limits, measured in one run.

    python bench/bench_torch.py [--threads N] [--quick] [--cases prefill,decode,moe]

1. machine: fp32 GEMM FLOP/s (torch.mm 2048^2) and memory read bandwidth (sum over a 1 GiB tensor);
2. prefill: SmolLM2-135M size, batch 1 x 512, fp32: omnic vs transformers (same weights), and the fraction of
   the GEMM FLOP/s reached (FLOPs from the compiler's report, which counts the causal triangle);
3. decode: greedy generation with the KV cache, same model: omnic tokens/s vs transformers' generate, and the
   fraction of the bandwidth bound (fp32 weight bytes read per token / measured read bandwidth);
4. mixture of experts: one GQA_MoE_Layer (16 experts, top-2, 1024 tokens) vs a dense block with the same
   active parameters (SwiGLU ff = 2 x expert width).
Random weights (no downloads). Targets (issue): prefill ratio <= 1.0, decode speed-up >= 1.5, MoE/dense <= 1.3.
Without --threads, torch's default (one per core); decoding splits its matrix-vector products across them
(runtime_torch/pack.py), transformers' generate runs them on one MKL thread whatever the setting.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import compiler
import runtime_torch as rt
from compiler.importers import hf_key_map, spec_from_hf_config
from runtime_torch.generate import generate


def timeit(fn, n: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def race(a, b, n: int) -> tuple[float, float]:
    """Median times of a and b, run alternately so that a change in machine load hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(n):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def machine(quick: bool) -> tuple[float, float]:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t = timeit(lambda: torch.mm(a, b), 5 if quick else 10)
    gemm = 2 * 2048 ** 3 / t
    x = torch.ones(256 * 2**20 // 4 * (1 if quick else 4))          # 256 MiB or 1 GiB of fp32
    t = timeit(lambda: x.sum(), 3 if quick else 5)
    bw = x.numel() * 4 / t
    return gemm, bw


def smollm(quick: bool):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True,
                      max_position_embeddings=8192, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(cfg).eval()
    c = compiler.compile(spec_from_hf_config(cfg.to_dict()), context=512, batch=1)
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, dict(hf.state_dict()), hf_key_map("llama"), strict=False)
    return hf, model.eval(), c


def bench_prefill(hf, model, c, ids, gemm: float, n: int) -> tuple:
    with torch.inference_mode():
        want = hf(input_ids=ids).logits
        got = model(input_ids=ids)["lm.lm_head"]
        assert (want - got).abs().max().item() < 1e-3, "omnic and transformers disagree"
        t_om, t_hf = race(lambda: model(input_ids=ids), lambda: hf(input_ids=ids), n)
    flops = c.report["flops"]["prefill"]
    return ("prefill 1x512 fp32", f"{t_om * 1e3:.0f} ms", f"{t_hf * 1e3:.0f} ms", f"{t_om / t_hf:.2f}",
            f"{flops / t_om / gemm:.0%} of GEMM peak ({flops / 1e9:.0f} GFLOP)")


def bench_decode(hf, model, c, prompt, new: int, bw: float, n: int) -> tuple:
    hf_gen = lambda: hf.generate(prompt, max_new_tokens=new, do_sample=False, eos_token_id=None,  # noqa: E731
                                 pad_token_id=0)
    with torch.inference_mode():
        same = torch.equal(generate(model, prompt, new), hf_gen())
        t_om, t_hf = race(lambda: generate(model, prompt, new), hf_gen, n)
    tok_om, tok_hf = new / t_om, new / t_hf
    wbytes = c.report["memory"]["weights"]["fp32"]
    bound = bw / wbytes
    return (f"decode {new} tokens (greedy{', same tokens' if same else ', TOKENS DIFFER'})",
            f"{tok_om:.1f} tok/s", f"{tok_hf:.1f} tok/s", f"{tok_om / tok_hf:.2f}x faster",
            f"{tok_om / bound:.0%} of bandwidth bound ({bound:.0f} tok/s at {wbytes / 1e6:.0f} MB/token)")


def bench_moe(n: int) -> tuple:
    D, F, E, k, T = 1024, 704, 16, 2, 1024
    common = {"num_heads": 16, "num_kv_heads": 4, "causal": True, "rope": "1d", "norm": "rmsnorm",
              "attn_bias": [], "mlp_bias": False}
    x_in = [{"name": "x", "kind": "tokens", "shape": ["B", T, D]}]
    moe = compiler.compile({"name": "moe", "inputs": x_in, "layers": [{"id": "l", "type": "GQA_MoE_Layer", "params": {
        **common, "hidden_dim": D, "num_experts": E, "top_k": k, "expert_dim": F}}]}, batch=1)
    dense = compiler.compile({"name": "dense", "inputs": x_in, "layers": [{"id": "l", "type": "TransformerBlock",
                              "params": {**common, "embed_dim": D, "mlp": "swiglu", "ff_dim": k * F}}]}, batch=1)
    assert moe.ok and dense.ok, [d.render() for d in moe.errors + dense.errors]
    assert moe.report["params"]["active"] - dense.report["params"]["total"] == E * D   # router only
    mm, dm = rt.build(moe).eval(), rt.build(dense).eval()
    x = torch.randn(1, T, D)
    with torch.inference_mode():
        t_moe, t_dense = race(lambda: mm(x=x), lambda: dm(x=x), n)
    return (f"MoE layer {E} experts top-{k}, {T} tokens", f"{t_moe * 1e3:.1f} ms", f"dense {t_dense * 1e3:.1f} ms",
            f"{t_moe / t_dense:.2f}", "same active parameters")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default="prefill,decode,moe", help="comma-separated: prefill, decode, moe")
    a = ap.parse_args()
    cases = a.cases.split(",")
    if a.threads:
        torch.set_num_threads(a.threads)
    n = 3 if a.quick else 5
    gemm, bw = machine(a.quick)
    print(f"machine: {torch.get_num_threads()} threads, fp32 GEMM {gemm / 1e9:.1f} GFLOP/s, "
          f"read bandwidth {bw / 1e9:.1f} GB/s")
    rows = []
    if "prefill" in cases or "decode" in cases:
        hf, model, c = smollm(a.quick)
        ids = torch.randint(0, 49152, (1, 512), generator=torch.Generator().manual_seed(0))
        if "prefill" in cases:
            rows.append(bench_prefill(hf, model, c, ids, gemm, n))
        if "decode" in cases:
            rows.append(bench_decode(hf, model, c, ids[:, :32], 32 if a.quick else 64, bw, n))
    if "moe" in cases:
        rows.append(bench_moe(n))

    w = [max(len(r[i]) for r in rows) for i in range(5)]
    head = ("case", "omnic", "peer", "ratio", "against the machine")
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    for r in rows:
        print("  ".join(s.ljust(w[i]) for i, s in enumerate(r)))


if __name__ == "__main__":
    main()
