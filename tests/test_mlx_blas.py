"""MLX's BLAS does not depend on import order: with `mlx.core` imported before `runtime_mlx`, matrix products still run
on OpenBLAS. The check is numerical and independent of runtime_mlx's bookkeeping: MLX's fp32 product is bit-equal to
OpenBLAS's own `cblas_sgemm` called through ctypes, and differs from it on the wheel's reference BLAS."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("mlx.core")
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
pytestmark = pytest.mark.skipif(sys.platform != "linux" or not os.path.exists(OPENBLAS),
                                reason="needs Debian's OpenBLAS (apt-get install libopenblas0-pthread)")

CHILD = r"""
import ctypes, json, sys, warnings
warnings.simplefilter("always")
caught = []
warnings.showwarning = lambda m, *a, **k: caught.append(str(m))
if sys.argv[1] == "mlx-first":
    import mlx.core as mx
    import runtime_mlx
else:
    import runtime_mlx
    import mlx.core as mx
import numpy as np
n = 96
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n)).astype(np.float32)
b = rng.standard_normal((n, n)).astype(np.float32)
got = np.array(mx.array(a) @ mx.array(b))
ref = np.zeros((n, n), np.float32)
lib = ctypes.CDLL(sys.argv[2])
P = ctypes.POINTER(ctypes.c_float)
lib.cblas_sgemm(101, 111, 111, n, n, n, ctypes.c_float(1.0), a.ctypes.data_as(P), n, b.ctypes.data_as(P), n,
                ctypes.c_float(0.0), ref.ctypes.data_as(P), n)     # row-major, no transposes
print(json.dumps({"blas": runtime_mlx.BLAS, "openblas_bits": bool((got == ref).all()),
                  "close": bool(np.allclose(got, a @ b, atol=1e-3)), "warnings": caught}))
"""


def _child(order, **env):
    r = subprocess.run([sys.executable, "-c", CHILD, order, OPENBLAS], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("order", ["runtime-first", "mlx-first"])
def test_products_run_on_openblas_whatever_the_import_order(order):
    out = _child(order, OMNIC_MLX_OPENBLAS="1")
    assert out["close"] and out["openblas_bits"], out
    assert out["blas"]["loaded"] and out["blas"]["how"] == ("preload" if order == "runtime-first" else "rebind")
    assert out["warnings"] == []


def test_reference_blas_differs_so_the_check_can_fail():
    out = _child("mlx-first", OMNIC_MLX_OPENBLAS="0")
    assert out["close"] and not out["openblas_bits"], out
    assert not out["blas"]["loaded"]


def test_a_failed_rebind_warns_once_with_the_fix():
    out = _child("mlx-first", OMNIC_MLX_OPENBLAS="/nonexistent/libopenblas.so")
    assert not out["blas"]["loaded"] and not out["openblas_bits"]
    [w] = out["warnings"]
    assert "slow reference BLAS" in w and "/nonexistent/libopenblas.so" in w
