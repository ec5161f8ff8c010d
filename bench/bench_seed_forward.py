"""Full-size seed VLMs on CPU in torch (random weights): build, one forward, a short greedy generate.

  nanoVLM original_small  specs/nanovlm/original_small.json: one 224 px image (49 placeholders) + text prompt;
                          greedy generate with the KV cache (runtime_torch.generate: the prefill runs the image
                          branch once; decoding runs the text path only)
  fVLM-135M               specs/fvlm_135m.json: 8 frames of 224 px + text prompt, forward in every mode; generate
                          uses the module's own KV-cached loop (FoveatedVLM.generate, coarse_fine)
Peers measured in the same run (timing peers with the same shapes and sizes, not checkpoints): transformers'
SiglipVisionModel + LlamaForCausalLM for nanoVLM (vision, then the LM over embeddings of the same length), and
Dinov2Model + LlamaForCausalLM driven as fVLM's release code drives them (coarse_fine: DINO once, two query
passes, the LM over the 8 visual tokens, then over 8 + T). Ratios are omnic / transformers (below 1 = faster).
Times are medians of --repeat runs after one warm-up, float32, torch's default CPU threads: wall time and the
process's CPU time (all threads). On a busy machine wall times stretch with the load average (printed); the ratios,
measured back to back in one process, are the figures to compare.
Run: python bench/bench_seed_forward.py [--prompt 32] [--new 8] [--repeat 3] [--no-peers] [--only fvlm] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
import runtime_torch as rt  # noqa: E402


CPU: dict[float, float] = {}     # wall median -> CPU median of the same figure, for printing


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall seconds of `repeat` runs after a warm-up (the CPU median is kept in CPU for `row`)."""
    out = fn()                                              # warm-up
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall = statistics.median(walls)
    CPU[wall] = statistics.median(cpus)
    return wall, out


def build(path: str):
    t0 = time.perf_counter()
    c = compiler.compile(os.path.join(ROOT, path)).raise_for_errors()
    model = rt.build(c, seed=0).eval()
    return c, model, time.perf_counter() - t0


def row(what: str, seconds: float, extra: str = "") -> None:
    cpu = CPU.get(seconds)
    cpu_text = f"{cpu * 1000:>10.1f} ms CPU" if cpu is not None else " " * 17
    print(f"  {what:<50} {seconds * 1000:>10.1f} ms wall {cpu_text}  {extra}")


# --- nanoVLM ----------------------------------------------------------------------------------------------------
def bench_nanovlm(args) -> None:
    c, model, t_build = build("specs/nanovlm/original_small.json")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"nanoVLM original_small: {n_params:,} parameters, built in {t_build:.2f} s")
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 224, 224, generator=g)
    ids = torch.randint(0, 49152, (1, 49 + args.prompt), generator=g)
    ids[:, 1:50] = 49152                                    # the 49 image placeholders
    with torch.no_grad():
        t_fwd, out = timed(lambda: model(image=image, input_ids=ids), args.repeat)
        row(f"forward (image + {ids.shape[1]} tokens)", t_fwd)

        from runtime_torch.generate import generate as cached_generate

        def generate():
            return cached_generate(model, ids, args.new, logits="decoder.head", image=image)[:, ids.shape[1]:]
        t_gen, new = timed(generate, max(1, args.repeat // 2))
        row(f"greedy generate {args.new} tokens (KV cache)", t_gen, f"{args.new / t_gen:.1f} tokens/s")
    if args.no_peers:
        return
    import transformers as T
    vis = T.SiglipVisionModel(T.SiglipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                   num_attention_heads=12, image_size=224, patch_size=16,
                                                   vision_use_head=False)).eval()
    lm = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=49280, hidden_size=576, intermediate_size=1536,
                                          num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                          tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5)).eval()
    proj = torch.randn(576, 3072) * 0.02

    def peer():
        x = vis(pixel_values=image).last_hidden_state                         # (1, 196, 768)
        x = x.view(1, 7, 2, 7, 2, 768).permute(0, 1, 3, 2, 4, 5).reshape(1, 49, 3072)
        emb = lm.model.embed_tokens(ids).clone()
        emb[ids == 49152] = F.linear(x, proj).view(-1, 576)
        return lm(inputs_embeds=emb).logits
    with torch.no_grad():
        t_peer, _ = timed(peer, args.repeat)
    row("transformers peer forward", t_peer, f"omnic / transformers = {t_fwd / t_peer:.2f}")


# --- fVLM ------------------------------------------------------------------------------------------------------------
def bench_fvlm(args) -> None:
    c, model, t_build = build("specs/fvlm_135m.json")
    node = model.node("fvlm")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"fVLM-135M: {n_params:,} parameters, built in {t_build:.2f} s")
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(1, 8, 3, 224, 224, generator=g)
    ids = torch.randint(0, 49152, (1, args.prompt), generator=g)
    times = {}
    with torch.no_grad():
        for mode in ("coarse_only", "coarse_fine", "autoregressive"):
            times[mode], _ = timed(lambda: node(frames, ids, mode=mode), args.repeat)
            row(f"forward {mode} (8 frames + {args.prompt} tokens)", times[mode])
        t_gen, _ = timed(lambda: node.generate(frames, ids, args.new, mode="coarse_fine"), max(1, args.repeat // 2))
        row(f"greedy generate {args.new} tokens (coarse_fine, cached)", t_gen, f"{args.new / t_gen:.1f} tokens/s "
            "(prefill included)")
    if args.no_peers:
        return
    import transformers as T
    dino = T.Dinov2Model(T.Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                                        image_size=518, patch_size=14)).eval()
    lm = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                          num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                          tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5)).eval()
    W = {k: torch.randn(*s) * 0.02 for k, s in (("qin", (384, 384)), ("out", (384, 384)), ("d2l", (576, 384)),
                                                 ("l2q", (384, 576)))}

    def peer():                                            # the release code's coarse_fine, logits everywhere
        h = dino.embeddings(frames.flatten(0, 1))
        kv = []
        for layer in dino.encoder.layer:
            n = layer.norm1(h)
            kv.append((layer.attention.k_proj(n), layer.attention.v_proj(n)))
            h = layer(h)

        def attend(q):
            z = F.linear(q, W["qin"])[:, None]
            for layer, (k, v) in zip(dino.encoder.layer, kv):
                split = lambda t: t.view(t.shape[0], -1, 6, 64).transpose(1, 2)  # noqa: E731
                o = F.scaled_dot_product_attention(split(layer.attention.q_proj(layer.norm1(z))), split(k), split(v))
                z = z + layer.layer_scale1(layer.attention.o_proj(o.transpose(1, 2).reshape(-1, 1, 384)))
                z = z + layer.layer_scale2(layer.mlp(layer.norm2(z)))
            return F.linear(dino.layernorm(z)[:, 0], W["out"])
        z = attend(torch.randn(8, 384)).view(1, 8, 384)
        q = F.linear(lm.model(inputs_embeds=F.linear(z, W["d2l"]) * 0.14).last_hidden_state, W["l2q"])
        z = attend(q.flatten(0, 1)).view(1, 8, 384)
        seq = torch.cat([F.linear(z, W["d2l"]) * 0.14, lm.model.embed_tokens(ids)], dim=1)
        return lm(inputs_embeds=seq).logits
    with torch.no_grad():
        t_peer, _ = timed(peer, args.repeat)
    row("transformers peer forward (coarse_fine)", t_peer,
        f"omnic / transformers = {times['coarse_fine'] / t_peer:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", type=int, default=32, help="text tokens in the prompt")
    ap.add_argument("--new", type=int, default=8, help="tokens to generate")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    ap.add_argument("--no-peers", action="store_true", help="skip the transformers peers")
    ap.add_argument("--only", choices=("nanovlm", "fvlm"), help="run one of the two models")
    ap.add_argument("--threads", type=int, help="torch CPU threads (on a loaded machine, 1 avoids waiting for "
                                                "the other threads' time slices on every small op)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32, random weights "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if args.only != "fvlm":
        bench_nanovlm(args)
    if args.only != "nanovlm":
        bench_fvlm(args)
    print(f"(load average at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
