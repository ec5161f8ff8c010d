"""PyTorch runtime speed against transformers and against this machine's own limits, measured in one run.

    python bench/bench_torch.py [--threads N] [--quick] [--cases prefill,decode,decode_bf16,moe,moe_decode]

1. machine: fp32 GEMM FLOP/s (torch.mm 2048^2) and the load average (os.getloadavg) at the start and the end;
2. prefill: SmolLM2-135M size, batch 1 x 512, fp32: omnic vs transformers (same weights), and the fraction of
   the GEMM FLOP/s reached (FLOPs from the compiler's report, which counts the causal triangle);
3. decode (fp32) and decode_bf16 (the same weights cast to bf16, transformers' too): greedy generation with the KV
   cache, omnic tokens/s vs transformers' generate; against two bounds measured on the same bytes: a plain read
   (torch.sum over a tensor of the weights' size) and the matrix-vector ceiling (torch's product, `kernels.linear`,
   of one vector by every matrix a step reads, nothing else), as tok/s; the ratio's ceiling is transformers' step
   time over the matrix-vector time (the speed-up if everything but those products took no time);
4. moe: one GQA_MoE_Layer (16 experts, top-2, 1024 tokens) vs a dense block with the same active parameters
   (SwiGLU ff = 2 x expert width);
5. moe_decode: a Mixtral-style model (8 experts, top-2, 8 layers, width 512), greedy decode vs transformers.
Every timed pair runs alternately, `n` times (3 with --quick, else 5); each figure is the median, the ratio's spread
[min-max] is over the pairs. Random weights (no downloads). Goals (issue #16): decode >= 80% of the bandwidth bound
and >= 2x transformers on one thread, MoE/dense <= 1.1.
Without --threads, torch's default (one per core); both runtimes use them (torch.mv and MKL thread a matrix-vector
product).
"""
from __future__ import annotations

import argparse
import os
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


def race(a, b, n: int) -> tuple[list[float], list[float]]:
    """Times of a and b, run alternately n times (after one warm-up each) so that a change in machine load hits
    both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(n):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return ta, tb


def spread(ta: list[float], tb: list[float]) -> str:
    """Median ratio tb / ta (how many times faster a is) over the pairs, with its [min-max]."""
    r = [y / x for x, y in zip(ta, tb)]
    return f"{statistics.median(r):.2f}x [{min(r):.2f}-{max(r):.2f}]"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def machine(quick: bool) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t = timeit(lambda: torch.mm(a, b), 5 if quick else 10)
    return 2 * 2048 ** 3 / t


def step_matrices(model) -> list[torch.Tensor]:
    """The matrices a decoding step of the packed `model` reads, once each: the fused groups' buffers and every other
    2-D weight (a tied embedding is read as the head)."""
    seen, out = set(), []
    for mod in model.modules():
        for g in (getattr(mod, "_groups", None) or {}).values():
            out.append(g.wt)
            seen |= {id(m.weight) for m in g.mods}
    out += [p for p in model.parameters() if p.dim() == 2 and id(p) not in seen]
    return out


def bounds(model, n: int) -> tuple[float, float, float]:
    """(bytes a step reads, plain read GB/s, matrix-vector GB/s) for the packed `model`, on those bytes."""
    from runtime_torch.kernels import linear
    mats = step_matrices(model)
    nbytes = sum(m.numel() * m.element_size() for m in mats)
    flat = torch.ones(nbytes // 4)
    t_read = timeit(lambda: flat.sum(), n)
    del flat
    xs = {(m.shape[1], m.dtype): torch.randn(1, 1, m.shape[1], dtype=m.dtype) for m in mats}
    with torch.inference_mode():
        t_mv = timeit(lambda: [linear(xs[m.shape[1], m.dtype], m) for m in mats], n)
    return nbytes, nbytes / t_read, nbytes / t_mv


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
        ta, tb = race(lambda: model(input_ids=ids), lambda: hf(input_ids=ids), n)
    t_om, t_hf = statistics.median(ta), statistics.median(tb)
    flops = c.report["flops"]["prefill"]
    return ("prefill 1x512 fp32", f"{t_om * 1e3:.0f} ms", f"{t_hf * 1e3:.0f} ms", spread(ta, tb),
            f"{flops / t_om / gemm:.0%} of GEMM peak ({flops / 1e9:.0f} GFLOP)")


def bench_decode(label: str, hf, model, prompt, new: int, n: int) -> tuple:
    """omnic's generate vs transformers' on the same weights (the model packed by the first generate), against
    the plain-read and matrix-vector bounds of the bytes a step reads."""
    hf_gen = lambda: hf.generate(prompt, max_new_tokens=new, do_sample=False, eos_token_id=None,  # noqa: E731
                                 pad_token_id=0)
    with torch.inference_mode():
        mine, theirs = generate(model, prompt, new), hf_gen()
        same = (mine == theirs).all(0).long().argmin().item() if not torch.equal(mine, theirs) else None
        ta, tb = race(lambda: generate(model, prompt, new), hf_gen, n)
    nbytes, read, mv = bounds(model, n)
    t_om, t_hf = statistics.median(ta), statistics.median(tb)
    tok_om, tok_hf = new / t_om, new / t_hf
    agree = "same tokens" if same is None else f"same tokens up to generated token {same - prompt.shape[1] + 1}"
    return (f"{label} {new} tokens ({agree})", f"{tok_om:.1f} tok/s", f"{tok_hf:.1f} tok/s", spread(ta, tb),
            f"{tok_om * nbytes / read:.0%} of the read bound ({read / nbytes:.0f} tok/s: {nbytes / 1e6:.0f} MB/token "
            f"at {read / 1e9:.1f} GB/s); {tok_om * nbytes / mv:.0%} of the matvec ceiling ({mv / nbytes:.0f} tok/s: "
            f"{mv / 1e9:.1f} GB/s); ratio ceiling {mv / nbytes / tok_hf:.2f}x")


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
        ta, tb = race(lambda: mm(x=x), lambda: dm(x=x), n)
    r = [a / b for a, b in zip(ta, tb)]
    return (f"MoE layer {E} experts top-{k}, {T} tokens", f"{statistics.median(ta) * 1e3:.1f} ms",
            f"dense {statistics.median(tb) * 1e3:.1f} ms",
            f"{statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}]", "MoE / dense time, same active parameters")


def mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=8,
                        num_key_value_heads=2, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2)
    torch.manual_seed(0)
    hf = MixtralForCausalLM(cfg).eval()
    c = compiler.compile(spec_from_hf_config(cfg.to_dict()), context=512, batch=1)
    model = rt.build(c, init=False)
    rt.load_state_dict_mapped(model, dict(hf.state_dict()), hf_key_map("mixtral"), strict=False)
    return hf, model.eval()


def bench_moe_decode(prompt, new: int, n: int) -> tuple:
    hf, model = mixtral()
    hf_gen = lambda: hf.generate(prompt, max_new_tokens=new, do_sample=False, eos_token_id=None,  # noqa: E731
                                 pad_token_id=0)
    with torch.inference_mode():
        same = torch.equal(generate(model, prompt, new), hf_gen())
        ta, tb = race(lambda: generate(model, prompt, new), hf_gen, n)
    return (f"MoE decode, Mixtral-style 8 experts top-2, {new} tokens "
            f"({'same tokens' if same else 'TOKENS DIFFER'})", f"{new / statistics.median(ta):.1f} tok/s",
            f"{new / statistics.median(tb):.1f} tok/s", spread(ta, tb), "few-token expert path (moe.experts_few)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default="prefill,decode,decode_bf16,moe,moe_decode",
                    help="comma-separated: prefill, decode, decode_bf16, moe, moe_decode")
    a = ap.parse_args()
    cases = a.cases.split(",")
    if a.threads:
        torch.set_num_threads(a.threads)
    n = 3 if a.quick else 5
    start = load()
    gemm = machine(a.quick)
    print(f"machine: {torch.get_num_threads()} threads, fp32 GEMM {gemm / 1e9:.1f} GFLOP/s, load average {start}")
    rows = []
    new = 32 if a.quick else 64
    ids = torch.randint(0, 49152, (1, 512), generator=torch.Generator().manual_seed(0))
    if {"prefill", "decode", "decode_bf16"} & set(cases):
        hf, model, c = smollm(a.quick)
        if "prefill" in cases:
            rows.append(bench_prefill(hf, model, c, ids, gemm, n))
        if "decode" in cases:
            rows.append(bench_decode("decode fp32", hf, model, ids[:, :32], new, n))
        if "decode_bf16" in cases:
            hf, model = hf.to(torch.bfloat16), model.to(torch.bfloat16)
            rows.append(bench_decode("decode bf16", hf, model, ids[:, :32], new, n))
        del hf, model
    if "moe" in cases:
        rows.append(bench_moe(n))
    if "moe_decode" in cases:
        rows.append(bench_moe_decode(ids[:, :32] % 32000, new, n))

    w = [max(len(r[i]) for r in rows) for i in range(5)]
    head = ("case", "omnic", "peer", "ratio [spread]", "against the machine")
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    for r in rows:
        print("  ".join(s.ljust(w[i]) for i, s in enumerate(r)))
    print(f"load average (1/5/15 min) at the start {start}, at the end {load()}")


if __name__ == "__main__":
    main()
