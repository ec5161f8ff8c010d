"""MLX implementation of Mamba2Block (compiler/ops/mamba2.py); mirror of `runtime_torch/ops/mamba2.py`.

The same chunked SSD scan in float32 (four matrix products per chunk), softplus(dt + dt_bias), A = -exp(A_log), the
D skip and the gated RMSNorm over n_groups groups. The convolution kernel is channels-last (I + 2 G N, K, 1)
(`runtime_mlx/layout.py`) and runs as `mx.conv1d` on (B, T, C).
Decoding: `__call__(x, cache=None)`; the declared states live in `cache.state`: "ssm" (B, H, P, N) and "conv"
(B, K - 1, I + 2 G N) (the torch runtime's (B, C, K-1) transposed, the same bytes), in x's dtype.
Shape vocabulary: B batch, T tokens of this call, l tokens of a chunk, D width, I inner width, H heads, P head
size, G groups, N state size, K kernel.
"""
from __future__ import annotations

import mlx.core as mx

from ..kernels import dense, rms_norm, silu
from ..node import Node
from ..registry import implements


def causal_conv(u: mx.array, conv, past) -> tuple[mx.array, mx.array]:
    """Depthwise causal convolution (module `conv`: weight (C, K, 1), bias optional) of u (B, T, C) continuing
    `past` (B, K-1, C) (zeros when None), then SiLU; returns (B, T, C) and the new past (the last K-1 inputs)."""
    w, bias = conv["weight"], conv.get("bias")
    K = w.shape[1]
    if past is None:
        past = mx.zeros((u.shape[0], K - 1, u.shape[2]), dtype=u.dtype)      # (B, K-1, C)
    full = mx.concatenate((past, u), axis=1)                                 # (B, K-1+T, C)
    y = mx.conv1d(full, w, groups=u.shape[2])                                # (B, T, C)
    return silu(y if bias is None else y + bias), full[:, full.shape[1] - (K - 1):]


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
class Mamba2Block(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.keep(dims=(p.inner, p.num_heads, p.head_dim, p.n_groups, p.state_size), eps=p.norm_eps,
                  chunk=p.chunk_size)

    def __call__(self, x, cache=None):
        b, T, _ = x.shape
        I, H, P, G, N = self.dims
        mixer, state = self["mixer"], {} if cache is None else cache.state
        f32 = mx.float32
        h = rms_norm(x, self["norm"]["weight"], self.eps)
        z, xbc, dt = mx.split(dense(h, mixer["in_proj"]), [I, 2 * I + 2 * G * N], axis=-1)
        xbc, state["conv"] = causal_conv(xbc, mixer["conv1d"], state.get("conv"))     # (B, T, I + 2GN)
        xs, Bm, Cm = mx.split(xbc, [I, I + G * N], axis=-1)                  # (B, T, I), (B, T, GN) x 2
        dt = mx.logaddexp(dt.astype(f32) + mixer["dt_bias"].astype(f32), 0.0)   # softplus, (B, T, H)
        A = -mx.exp(mixer["A_log"].astype(f32))                              # (H,)
        xs = xs.reshape(b, T, H, P)                                          # (B, T, H, P)
        y, S = ssd_scan(xs, dt, A, Bm.reshape(b, T, G, N), Cm.reshape(b, T, G, N), self.chunk, state.get("ssm"))
        state["ssm"] = S.astype(x.dtype)
        if cache is not None:
            cache.seen += T
        y = y + mixer["D"].astype(f32)[:, None] * xs.astype(f32)             # (B, T, H, P)
        y = gated_rms_norm(y.reshape(b, T, I), z, mixer["norm"]["weight"], G, self.eps)   # (B, T, I)
        return x + dense(y.astype(x.dtype), mixer["out_proj"])               # (B, T, D)
