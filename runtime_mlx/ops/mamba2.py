"""MLX implementation of Mamba2Block (compiler/ops/mamba2.py); mirror of `runtime_torch/ops/mamba2.py`.

The same chunked SSD scan in float32 (four matrix products per chunk), softplus(dt + dt_bias), A = -exp(A_log), the
D skip and the gated RMSNorm over n_groups groups. The convolution kernel is channels-last (I + 2 G N, K, 1)
(`runtime_mlx/layout.py`) and runs as `mx.conv1d` on (B, T, C).
Decoding: `__call__(x, cache=None)`; the cache holds `ssm` (B, H, P, N) and `conv` (B, K - 1, I + 2 G N) (the torch
runtime's (B, C, K-1) transposed, the same bytes), in x's dtype.
Shape vocabulary: B batch, T tokens of this call, l tokens of a chunk, D width, I inner width, H heads, P head
size, G groups, N state size, K kernel.
"""
from __future__ import annotations

import mlx.core as mx

from compiler.ops.mamba2 import Mamba2Block as Op

from ..registry import implements
from .basic import rms_norm, silu
from .vision import Named


def causal_conv(u: mx.array, weight: mx.array, bias, past) -> tuple[mx.array, mx.array]:
    """Depthwise causal convolution of u (B, T, C) continuing `past` (B, K-1, C) (zeros when None), then SiLU;
    returns (B, T, C) and the new past (the last K-1 inputs)."""
    K = weight.shape[1]
    if past is None:
        past = mx.zeros((u.shape[0], K - 1, u.shape[2]), dtype=u.dtype)      # (B, K-1, C)
    full = mx.concatenate((past, u), axis=1)                                 # (B, K-1+T, C)
    y = mx.conv1d(full, weight, groups=u.shape[2])                           # (B, T, C)
    if bias is not None:
        y = y + bias
    return silu(y), full[:, full.shape[1] - (K - 1):]


def ssd_scan(x, dt, A, Bm, Cm, chunk: int, S=None):
    """x (B, T, H, P), dt (B, T, H) (after softplus), A (H,), Bm, Cm (B, T, G, N), S (B, H, P, N) or None ->
    y (B, T, H, P) float32 without the D skip, final S float32."""
    b, T, H, P = x.shape
    G, N = Bm.shape[2:]
    r = H // G                                                               # heads per group
    f32 = mx.float32
    x, dt, Bm, Cm = x.astype(f32), dt.astype(f32), Bm.astype(f32), Cm.astype(f32)
    S = mx.zeros((b, H, P, N), dtype=f32) if S is None else S.astype(f32)
    ys = []
    for s in range(0, T, chunk):
        l = min(chunk, T - s)
        xc = x[:, s:s + l].transpose(0, 2, 1, 3)                             # (B, H, l, P)
        dtc = dt[:, s:s + l].transpose(0, 2, 1)                              # (B, H, l)
        Bc = mx.expand_dims(Bm[:, s:s + l].transpose(0, 2, 1, 3), 2)         # (B, G, 1, l, N)
        Cc = mx.expand_dims(Cm[:, s:s + l].transpose(0, 2, 1, 3), 2)         # (B, G, 1, l, N)
        a = mx.cumsum(dtc * A[:, None], axis=-1)                             # (B, H, l)
        causal = mx.tril(mx.ones((l, l), dtype=mx.bool_))
        decay = mx.exp(mx.where(causal, a[..., :, None] - a[..., None, :], -mx.inf))   # (B, H, l, l)
        scores = Cc @ Bc.swapaxes(-1, -2)                                    # (B, G, 1, l, l)
        M = (scores * decay.reshape(b, G, r, l, l)).reshape(b, H, l, l) * dtc[..., None, :]   # (B, H, l, l)
        Sg = S.reshape(b, G, r, P, N)
        y = M @ xc + mx.exp(a)[..., None] * (Cc @ Sg.swapaxes(-1, -2)).reshape(b, H, l, P)   # (B, H, l, P)
        w = mx.exp(a[..., -1:] - a) * dtc                                    # (B, H, l)
        new = ((xc * w[..., None]).swapaxes(-1, -2).reshape(b, G, r, P, l) @ Bc).reshape(b, H, P, N)
        S = mx.exp(a[..., -1])[..., None, None] * S + new                    # (B, H, P, N)
        ys.append(y)
    return mx.concatenate(ys, axis=2).transpose(0, 2, 1, 3), S               # (B, T, H, P)


def gated_rms_norm(y, z, weight, groups: int, eps: float):
    """y * silu(z), RMS-normalised over `groups` equal groups (float32), times weight."""
    dtype = y.dtype
    h = y.astype(mx.float32) * silu(z.astype(mx.float32))
    g = h.reshape(*h.shape[:-1], groups, -1)                                 # (..., G, I/G)
    g = g * mx.rsqrt(mx.mean(g * g, axis=-1, keepdims=True) + eps)
    return weight * g.reshape(h.shape).astype(dtype)


@implements("Mamba2Block")
class Mamba2Block(Named):
    def __init__(self, p, in_types):
        super().__init__("Mamba2Block", Op.weights(p))
        self._dims = (p.inner, p.num_heads, p.head_dim, p.n_groups, p.state_size)
        self._eps, self._chunk = p.norm_eps, p.chunk_size
        self._bias = {k: (k + ".bias") if (p.use_bias if "proj" in k else p.use_conv_bias) else None
                      for k in ("mixer.in_proj", "mixer.conv1d", "mixer.out_proj")}

    def __call__(self, x, cache=None):
        t, bias = self.t, self._bias
        b, T, _ = x.shape
        I, H, P, G, N = self._dims
        h = rms_norm(x, t("norm.weight"), self._eps, 0.0)
        ib = bias["mixer.in_proj"]
        zxbcdt = h @ t("mixer.in_proj.weight").T
        if ib:
            zxbcdt = zxbcdt + t(ib)
        z, xbc, dt = mx.split(zxbcdt, [I, 2 * I + 2 * G * N], axis=-1)
        cb = bias["mixer.conv1d"]
        xbc, past = causal_conv(xbc, t("mixer.conv1d.weight"), cb and t(cb), None if cache is None else cache.conv)
        xs, Bm, Cm = mx.split(xbc, [I, I + G * N], axis=-1)                  # (B, T, I), (B, T, GN) x 2
        dt = mx.logaddexp(dt.astype(mx.float32) + t("mixer.dt_bias").astype(mx.float32), 0.0)   # softplus (B, T, H)
        A = -mx.exp(t("mixer.A_log").astype(mx.float32))                     # (H,)
        xs = xs.reshape(b, T, H, P)                                          # (B, T, H, P)
        y, S = ssd_scan(xs, dt, A, Bm.reshape(b, T, G, N), Cm.reshape(b, T, G, N), self._chunk,
                        None if cache is None else cache.ssm)
        y = y + t("mixer.D").astype(mx.float32)[:, None] * xs.astype(mx.float32)   # (B, T, H, P)
        if cache is not None:
            cache.conv, cache.ssm = past, S.astype(x.dtype)
            cache.seen += T
        y = gated_rms_norm(y.reshape(b, T, I), z, t("mixer.norm.weight"), G, self._eps)   # (B, T, I)
        out = y.astype(x.dtype) @ t("mixer.out_proj.weight").T
        ob = bias["mixer.out_proj"]
        return x + (out + t(ob) if ob else out)                              # (B, T, D)
