"""How long omnic takes to build a model's weights, against the work that cannot be avoided, measured in the same run.

Each figure is one fresh process (memory as a user's process finds it), the timed part alone (not imports or
compile(), except where said); median and spread over --repeats (the cases of a row rotated, so all see the same
machine), with the process's peak RSS. Groups (--only):
  seeded  `to_torch(seed=0)` / `to_mlx(seed=0)` (float32; to_mlx's time includes importing torch, whose generators
          it draws with) vs two floors: a process that allocates and fills (with zeros) float32 tensors of the
          model's shapes (the memory every build must touch), and one that allocates them and draws each with
          torch's normal_ from its own generator, 2 threads, largest first (the work the exact values need)
  ckpt    `to_torch(weights=FILE)` vs `safetensors.torch.load_file(FILE)`, and `to_mlx(weights=FILE)` vs
          `mx.load(FILE)` + one eval of every array, on a file the torch runtime saved (in the page cache: read once
          before)
  build   `omnic build SPEC --target torch --weights` (the whole process: start-up, imports, compile, write) vs a
          process that allocates tensors of the model's shapes and writes them with `safetensors.torch.save_file`
          (allocate + write), and one that maps a new file of the weights' size and fills it with zeros (the bytes
          any writer must put in the page cache; timed part only)
Ratios are omnic / peer (1.0 = no overhead over the unavoidable work). The seeded values are the exact values of
the name-keyed scheme (runtime_common/init.py: one mt19937 stream per tensor, drawn by torch's normal_), tensors
drawn by one thread per core.
Run: python bench/bench_build.py [--spec specs/oculus.json] [--repeats 3] [--only seeded,ckpt,build]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

PRELUDE = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from compiler import compile
c = compile({spec!r}).raise_for_errors()
"""
REPORT = """
print(json.dumps({"s": time.perf_counter() - t0, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""
SHAPES = """
from compiler.cost import cost_nodes
shapes = [w.shape for nc in cost_nodes(c.graph, 1, 1, 1) for w in nc.weights.values() if not w.tied_to]
"""
# torch's generators alone: each tensor drawn by normal_ from its own generator, 2 threads, largest first
DRAW = """
import math, torch
from concurrent.futures import ThreadPoolExecutor
def draw(alloc):
    order = sorted(range(len(shapes)), key=lambda i: -math.prod(shapes[i]))
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda i: alloc(i, shapes[i]).normal_(0, 0.02, generator=torch.Generator().manual_seed(i)),
                             order))
"""
CASES = {
    "floor (alloc + fill, fp32)": SHAPES + "import torch\nt0 = time.perf_counter()\n"
                                           "ts = [torch.empty(s).fill_(0) for s in shapes]\n",
    "to_torch(seed=0)": "import runtime_torch\nt0 = time.perf_counter()\nm = c.to_torch(seed=0)\n",
    "to_mlx(seed=0)": "import runtime_mlx, mlx.core as mx\nt0 = time.perf_counter()\nm = c.to_mlx(seed=0)\n",
    "safetensors load_file": "import torch\nfrom safetensors.torch import load_file\nt0 = time.perf_counter()\n"
                             "sd = load_file({file!r})\n",
    "to_torch(weights=FILE)": "import runtime_torch\nt0 = time.perf_counter()\nm = c.to_torch(weights={file!r})\n",
    "mx.load": "import runtime_mlx, mlx.core as mx\nt0 = time.perf_counter()\nsd = mx.load({file!r})\n"
               "mx.eval(list(sd.values()))\n",
    "to_mlx(weights=FILE)": "import runtime_mlx\nt0 = time.perf_counter()\nm = c.to_mlx(weights={file!r})\n",
    "floor (alloc + draw, 2 threads)": SHAPES + DRAW + "t0 = time.perf_counter()\n"
                                        "ts = draw(lambda i, s: torch.empty(s))\n",
    "alloc + save_file": SHAPES + "import torch\nfrom safetensors.torch import save_file\nt0 = time.perf_counter()\n"
                         "save_file({{f'w{{i}}': torch.empty(s).fill_(0) for i, s in enumerate(shapes)}}, {out!r})\n",
    "map + fill a file (zeros)": SHAPES + "import math, mmap, torch\nt0 = time.perf_counter()\n"
                                 "n = 4 * sum(math.prod(s) for s in shapes)\n"
                                 "with open({out!r}, 'wb+') as f:\n"
                                 "    f.truncate(n)\n"
                                 "    mm = mmap.mmap(f.fileno(), n)\n"
                                 "    torch.frombuffer(mm, dtype=torch.float32).fill_(0)\n",
}
GROUPS = {      # (omnic's case, its peers)
    "seeded": [("to_torch(seed=0)", "floor (alloc + fill, fp32)", "floor (alloc + draw, 2 threads)"),
               ("to_mlx(seed=0)", "floor (alloc + fill, fp32)", "floor (alloc + draw, 2 threads)")],
    "ckpt": [("to_torch(weights=FILE)", "safetensors load_file"), ("to_mlx(weights=FILE)", "mx.load")],
    "build": [("omnic build --weights", "alloc + save_file", "map + fill a file (zeros)")],
}


def has_mlx() -> bool:
    return subprocess.run([sys.executable, "-c", "import runtime_mlx"], capture_output=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode == 0


def run_case(name: str, spec: str, file: str, tmp: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMNIC_PROGRESS": "0"}
    out = os.path.join(tmp, "out")
    shutil.rmtree(out, ignore_errors=True)
    if name == "omnic build --weights":
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "compiler", "build", spec, "--target", "torch", "-o", out,
                            "--weights"], capture_output=True, text=True, cwd=ROOT, env=env)
        if p.returncode:
            sys.exit(f"{name} failed:\n{p.stderr[-3000:]}")
        return {"s": time.perf_counter() - t0, "rss_gb": float("nan")}
    code = PRELUDE.format(root=str(ROOT), spec=spec) + CASES[name].format(file=file, out=out + ".safetensors") + \
        REPORT
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode:
        sys.exit(f"{name} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.2f} s  [{min(xs):.2f} .. {max(xs):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="specs/oculus.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="seeded,ckpt,build", help="comma-separated groups: seeded, ckpt, build")
    ap.add_argument("--dir", help="where the checkpoint is written (default: a temporary folder)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from compiler import compile
    c = compile(args.spec).raise_for_errors()
    total = c.report["params"]["total"]
    mlx = has_mlx()
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    print(f"spec: {args.spec} ({total / 1e6:.1f}M parameters, {total * 4 / 1e9:.2f} GB in float32); "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start; {args.repeats} repeats, "
          "one fresh process each; ratio = omnic / peer (medians)", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        file = os.path.join(tmp, "model.safetensors")
        if "ckpt" in groups:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", PRELUDE.format(root=str(ROOT), spec=args.spec) +
                            f"import runtime_torch\nruntime_torch.save_weights(c.to_torch(seed=0), {file!r})\n"],
                           check=True, cwd=ROOT, env={**os.environ, "OMNIC_PROGRESS": "0"})
            with open(file, "rb") as f:                     # into the page cache: every reader finds it there
                while f.read(1 << 26):
                    pass
            print(f"checkpoint: {os.path.getsize(file) / 1e9:.2f} GB written and read once in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        for g in groups:
            for ours, *peers in GROUPS[g]:
                if "mlx" in ours and not mlx:
                    print(f"  {ours}: MLX not installed, skipped")
                    continue
                names = [ours, *peers]
                times: dict[str, list] = {n: [] for n in names}
                rss: dict[str, list] = {n: [] for n in names}
                for i in range(args.repeats):          # rotate, so all see the same machine
                    for name in names[i % len(names):] + names[:i % len(names)]:
                        r = run_case(name, args.spec, file, tmp)
                        times[name].append(r["s"])
                        rss[name].append(r["rss_gb"])
                for name in names:
                    print(f"  {name:32s} {spread(times[name])}   peak RSS {max(rss[name]):5.2f} GB")
                ratios = ", ".join(f"{statistics.median(times[ours]) / statistics.median(times[p]):.2f}x {p}"
                                   for p in peers)
                print(f"  {'':32s} ratio {ratios} (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
