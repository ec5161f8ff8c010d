"""How long omnic takes to check a model, against building the same model on the meta device in transformers.

Measured in the same run, on the same machine:
  omnic process        `python -m compiler check SPEC --quiet` as a whole process (start-up and imports included)
  omnic compile()      `compiler.compile(SPEC)` in-process, warm (median of N)
  transformers process `python -c "import torch, transformers; build on meta"` as a whole process
  transformers build   the model built under `torch.device("meta")` in-process, warm (median of N)
and, for what bounds the process, two floors: `python -c pass` and a process that imports pydantic and validates one
model (omnic's spec validation needs pydantic). Medians with [min .. max] over the repeats; the load average beside.
Targets (issue #16, goal 6): the omnic process under 200 ms and at least 30x faster than the transformers process;
compile() under 15 ms. The ratios are transformers / omnic.

The spec is the largest file under specs/ (or --spec). Its transformers peer comes from PEERS (specs whose real
components transformers has) or, failing that, a Llama of the dimensions of the spec's largest stack of
TransformerBlocks and its largest Embedding: a timing peer of the same size, not a checkpoint-compatible model.
Run: python bench/bench_compile.py [--spec specs/oculus.json] [-n 20]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET_PROCESS_S = 0.200
TARGET_COMPILE_S = 0.015
TARGET_RATIO = 30
FLOORS = {"python -c pass": "pass",
          "python + pydantic, one model": "from pydantic import BaseModel\nclass A(BaseModel):\n    x: int\nA(x=1)"}

# spec file stem -> [(transformers model class, config class, config kwargs)]
PEERS: dict[str, list[tuple[str, str, dict]]] = {
    "oculus": [
        ("DINOv3ViTModel", "DINOv3ViTConfig", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                   num_attention_heads=16, patch_size=16, num_register_tokens=4,
                                                   image_size=224)),
        ("Siglip2VisionModel", "Siglip2VisionConfig", dict(hidden_size=1152, intermediate_size=4304,
                                                           num_hidden_layers=27, num_attention_heads=16,
                                                           patch_size=16, num_patches=576, vision_use_head=False)),
        ("Lfm2ForCausalLM", "Lfm2Config", dict(vocab_size=65536, hidden_size=2048, intermediate_size=12288,
                                               num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                               full_attn_idxs=[2, 5, 8, 10, 12, 14], tie_word_embeddings=True)),
    ],
}

PEER_BUILD = """
import json, sys, time, torch, transformers
def build(peers):
    n = 0
    for model, config, kw in peers:
        cfg = getattr(transformers, config)(**kw)
        with torch.device("meta"):
            m = getattr(transformers, model)._from_config(cfg)
        n += sum(p.numel() for p in m.parameters())
    return n
peers = json.loads(sys.argv[1])
"""


def largest_spec() -> pathlib.Path:
    files = [p for p in (ROOT / "specs").rglob("*.json") if p.name != "schema.json" and "components" not in p.parts]
    if not files:
        sys.exit("no spec under specs/: pass --spec PATH")
    return max(files, key=lambda p: p.stat().st_size)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: less sensitive than wall time to a busy machine."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Timing(tuple):
    """(median wall, median CPU) seconds, with the wall times' range."""
    lo: float
    hi: float


def median_time(fn, n: int) -> Timing:
    """Median wall and median CPU seconds of n calls, and the range of the wall times."""
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), cpu_seconds()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(cpu_seconds() - c)
    out = Timing((statistics.median(wall), statistics.median(cpu)))
    out.lo, out.hi = min(wall), max(wall)
    return out


def rng(t: Timing) -> str:
    return f"[{t.lo * 1000:.1f} .. {t.hi * 1000:.1f}]"


def generic_peer(compiled) -> list[tuple[str, str, dict]]:
    """A Llama with the dimensions of the spec's largest TransformerBlock stack (a same-size timing peer)."""
    groups: dict[str, list] = {}
    nodes = compiled.graph.nodes()
    vocab = max((n.params.num_embeddings for n in nodes if n.op == "Embedding"), default=32000)
    for n in nodes:
        if hasattr(n.params, "num_heads") and hasattr(n.params, "ff_dim"):
            groups.setdefault(n.group or n.name, []).append(n)
    if not groups:
        return []
    nodes = max(groups.values(), key=len)
    p = nodes[0].params
    d = p.embed_dim or p.hidden_dim
    return [("LlamaForCausalLM", "LlamaConfig", dict(
        vocab_size=vocab, hidden_size=d, intermediate_size=p.ff_dim or 4 * d, num_hidden_layers=len(nodes),
        num_attention_heads=p.num_heads, num_key_value_heads=p.num_kv_heads or p.num_heads,
        head_dim=p.head_dim or d // p.num_heads))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=pathlib.Path)
    ap.add_argument("-n", type=int, default=20, help="repetitions of the in-process timings")
    ap.add_argument("--processes", type=int, default=5, help="repetitions of the whole-process timings")
    args = ap.parse_args()
    spec = args.spec or largest_spec()
    sys.path.insert(0, str(ROOT))
    from compiler import compile

    c = compile(spec)
    if not c.ok:
        sys.exit(f"{spec} does not compile:\n" + "\n".join(d.render() for d in c.errors))
    print(f"spec: {spec.relative_to(ROOT) if spec.is_absolute() and ROOT in spec.parents else spec} "
          f"({c.report['params']['total'] / 1e6:.1f}M parameters, {len(c.graph.order)} nodes)")

    # as a user runs it: bytecode cached (PYTHONDONTWRITEBYTECODE would recompile every module each start)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    check = [sys.executable, "-m", "compiler", "check", str(spec), "--quiet"]
    subprocess.run(check, capture_output=True, env=env, cwd=ROOT)  # warm: writes __pycache__
    t_proc = median_time(lambda: subprocess.run(check, capture_output=True, env=env, cwd=ROOT), args.processes)
    compile(spec)  # warm
    t_comp = median_time(lambda: compile(spec), args.n)
    floors = {}
    for name, code in FLOORS.items():
        cmd = [sys.executable, "-c", code]
        subprocess.run(cmd, capture_output=True, env=env)
        floors[name] = median_time(lambda: subprocess.run(cmd, capture_output=True, env=env), args.processes)
    print(f"  {'':34s} {'wall':>9s}    {'CPU':>9s}   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for name, t, target in [("omnic check (process)", t_proc, TARGET_PROCESS_S),
                            ("omnic compile() (in-process)", t_comp, TARGET_COMPILE_S)]:
        wall, cpu = t
        print(f"  {name:34s} {wall * 1000:6.1f} ms   {cpu * 1000:6.1f} ms   {rng(t)}  target < {target * 1000:.0f} ms: "
              f"{'met' if wall < target else 'MISSED'}")
    for name, t in floors.items():
        print(f"  {'floor: ' + name:34s} {t[0] * 1000:6.1f} ms   {t[1] * 1000:6.1f} ms   {rng(t)}")

    peers = PEERS.get(spec.stem) or generic_peer(c)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        print("transformers / torch not installed: no peer timings")
        return
    if not peers:
        print("no transformers peer for this spec (no TransformerBlock stack): no peer timings")
        return
    code = PEER_BUILD + "t = time.perf_counter(); build(peers)\n"
    pj = json.dumps(peers)
    peer = [sys.executable, "-c", code, pj]
    subprocess.run(peer, capture_output=True, check=True, env=env)  # warm, as above
    t_hf_proc = median_time(lambda: subprocess.run(peer, capture_output=True, check=True, env=env), args.processes)
    ns: dict = {}
    exec(PEER_BUILD.replace("peers = json.loads(sys.argv[1])", ""), ns)
    n_hf = ns["build"](peers)  # warm (transformers imports its modeling files lazily)
    t_hf = median_time(lambda: ns["build"](peers), max(3, args.n // 4))
    print(f"transformers peer: {', '.join(m for m, _, _ in peers)} ({n_hf / 1e6:.1f}M parameters); "
          "ratios are transformers / omnic")
    for name, t, (owall, ocpu), target in [("transformers (process)", t_hf_proc, t_proc, TARGET_RATIO),
                                           ("transformers meta build (warm)", t_hf, t_comp, None)]:
        wall, cpu = t
        verdict = f"   target >= {target}x: {'met' if wall / owall >= target else 'MISSED'}" if target else ""
        print(f"  {name:34s} {wall * 1000:6.1f} ms   {cpu * 1000:6.1f} ms   {rng(t)}  ratio {wall / owall:5.1f}x wall, "
              f"{cpu / ocpu:5.1f}x CPU{verdict}")


if __name__ == "__main__":
    main()
