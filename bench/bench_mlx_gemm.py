"""fp32 GEMM throughput of MLX on the CPU, with and without the OpenBLAS preload of `runtime_mlx`.

Each variant runs in a fresh interpreter (the BLAS is bound when `mlx` is first imported), so both are measured in
the same run of this script. Usage: `python bench/bench_mlx_gemm.py [--n 1024] [--reps 5]`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import runtime_mlx
import mlx.core as mx
n, reps = int(sys.argv[1]), int(sys.argv[2])
a = mx.random.normal((n, n)); b = mx.random.normal((n, n)); mx.eval(a, b)
mx.eval(a @ b)                                   # warm-up
best = float("inf")
for _ in range(reps):
    t = time.perf_counter(); mx.eval(a @ b); best = min(best, time.perf_counter() - t)
print(json.dumps({"blas": runtime_mlx.BLAS, "seconds": best, "gflops": 2 * n ** 3 / best / 1e9}))
"""


def measure(openblas: bool, n: int, reps: int) -> dict:
    env = dict(os.environ, OMNIC_MLX_OPENBLAS="1" if openblas else "0")
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(reps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    rows = [("bundled reference BLAS", measure(False, a.n, a.reps)), ("OpenBLAS preload", measure(True, a.n, a.reps))]
    print(f"fp32 GEMM {a.n}x{a.n}x{a.n}, best of {a.reps}")
    print(f"{'variant':<24} {'ms':>9} {'GFLOP/s':>9}  blas")
    for name, r in rows:
        print(f"{name:<24} {r['seconds'] * 1e3:9.1f} {r['gflops']:9.1f}  {r['blas']['path'] or r['blas']['reason']}")
    print(f"speed-up: {rows[1][1]['gflops'] / rows[0][1]['gflops']:.1f}x   (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
