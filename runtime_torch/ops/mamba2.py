"""Torch implementation of Mamba2Block (compiler/ops/mamba2.py): norm -> Mamba-2 mixer -> residual.

The numerics are transformers 5.x's `Mamba2Mixer` torch path: float32 inside the scan, softplus(dt + dt_bias),
A = -exp(A_log), the D skip, the gated RMSNorm over n_groups groups (float32, weight applied after the cast back).
The scan is the chunked SSD form written as four matrix products per chunk (the op docstring's FLOP convention):
within a chunk of l tokens y_i = sum_{j<=i} exp(a_i - a_j) (C_i . B_j) dt_j x_j, plus the carried state's read-out
exp(a_i) C_i S; the chunk then leaves S <- exp(a_l) S + sum_j exp(a_l - a_j) dt_j x_j B_j^T (a = cumulative dt A
from the chunk's start). A decoded token is a chunk of one; a traced forward (torch.export, ONNX) is one chunk.

Decoding: `forward(x, cache=None)`; the op's declared states live in `cache.state`: "ssm" (B, H, P, N) and "conv"
(B, I + 2 G N, K - 1), the last K - 1 inputs of the convolution, both in x's dtype.
Shape vocabulary: B batch, T tokens of this call, l tokens of a chunk, D width, I inner width, H heads, P head
size, G groups, N state size, K kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import dense, rms_norm
from ..node import Node
from ..registry import implements


def causal_conv(u: torch.Tensor, conv, past) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution (module `conv`: weight (C, 1, K), bias or None) of u (B, C, T) continuing
    `past` (B, C, K-1) (zeros when None), then SiLU; returns (B, C, T) and the new past (the last K-1 inputs)."""
    K = conv.weight.shape[-1]
    if past is None:
        past = u.new_zeros(u.shape[0], u.shape[1], K - 1)                   # (B, C, K-1)
    full = torch.cat((past, u), dim=-1)                                      # (B, C, K-1+T)
    y = F.conv1d(full, conv.weight, conv.bias, groups=u.shape[1])            # (B, C, T)
    return F.silu(y), full[..., full.shape[-1] - (K - 1):].clone()          # own storage: the state


def ssd_scan(x, dt, A, Bm, Cm, chunk: int, S=None):
    """The selective scan without the D skip: x (B, T, H, P), dt (B, T, H) (after softplus), A (H,),
    Bm, Cm (B, T, G, N), S (B, H, P, N) or None -> y (B, T, H, P) float32, final S float32."""
    b, T, H, P = x.shape
    G, N = Bm.shape[2:]
    r = H // G                                                               # heads per group
    x, dt, Bm, Cm = x.float(), dt.float(), Bm.float(), Cm.float()
    S = x.new_zeros(b, H, P, N) if S is None else S.float()
    ys = []
    # traced (torch.export, ONNX): one chunk, as a symbolic length cannot drive the loop (the same result)
    spans = [(0, T)] if torch.compiler.is_compiling() else [(s, min(s + chunk, T)) for s in range(0, T, chunk)]
    for s, e in spans:
        l = e - s
        xc = x[:, s:e].transpose(1, 2)                                       # (B, H, l, P)
        dtc = dt[:, s:e].transpose(1, 2)                                     # (B, H, l)
        Bc = Bm[:, s:e].transpose(1, 2).unsqueeze(2)                         # (B, G, 1, l, N)
        Cc = Cm[:, s:e].transpose(1, 2).unsqueeze(2)                         # (B, G, 1, l, N)
        a = torch.cumsum(dtc * A[:, None], dim=-1)                           # (B, H, l)
        causal = torch.ones(l, l, dtype=torch.bool, device=x.device).tril()
        decay = (a[..., :, None] - a[..., None, :]).masked_fill(~causal, float("-inf")).exp()   # (B, H, l, l)
        scores = Cc @ Bc.transpose(-1, -2)                                   # (B, G, 1, l, l)
        M = (scores * decay.view(b, G, r, l, l)).view(b, H, l, l) * dtc[..., None, :]   # (B, H, l, l)
        Sg = S.view(b, G, r, P, N)
        y = M @ xc + a.exp()[..., None] * (Cc @ Sg.transpose(-1, -2)).view(b, H, l, P)   # (B, H, l, P)
        w = (a[..., -1:] - a).exp() * dtc                                    # (B, H, l)
        new = ((xc * w[..., None]).transpose(-1, -2).reshape(b, G, r, P, l) @ Bc).view(b, H, P, N)
        S = a[..., -1].exp()[..., None, None] * S + new                      # (B, H, P, N)
        ys.append(y)
    return torch.cat(ys, dim=2).transpose(1, 2), S                           # (B, T, H, P)


def gated_rms_norm(y, z, weight, groups: int, eps: float):
    """transformers' MambaRMSNormGated: y * silu(z), RMS-normalised over `groups` equal groups, times weight."""
    dtype = y.dtype
    h = y.float() * F.silu(z.float())
    g = h.view(*h.shape[:-1], groups, -1)                                    # (..., G, I/G)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return weight * g.view(h.shape).to(dtype)


@implements("Mamba2Block")
class Mamba2Block(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.keep(dims=(p.inner, p.num_heads, p.head_dim, p.n_groups, p.state_size), eps=p.norm_eps,
                  chunk=p.chunk_size, dt_bias=self.ref("mixer.dt_bias"), A_log=self.ref("mixer.A_log"),
                  D=self.ref("mixer.D"))

    def forward(self, x, cache=None):
        b, T, _ = x.shape
        I, H, P, G, N = self.dims
        mixer, state = self.mixer, {} if cache is None else cache.state
        h = rms_norm(x, self.norm.weight, self.eps)
        z, xbc, dt = dense(h, mixer.in_proj).split([I, I + 2 * G * N, H], dim=-1)
        xbc, state["conv"] = causal_conv(xbc.transpose(1, 2), mixer.conv1d, state.get("conv"))   # (B, I+2GN, T)
        xs, Bm, Cm = xbc.transpose(1, 2).split([I, G * N, G * N], dim=-1)    # (B, T, I), (B, T, GN) x 2
        dt = F.softplus(dt.float() + getattr(*self.dt_bias).float())         # (B, T, H)
        A = -torch.exp(getattr(*self.A_log).float())                         # (H,)
        xs = xs.reshape(b, T, H, P)                                          # (B, T, H, P)
        y, S = ssd_scan(xs, dt, A, Bm.reshape(b, T, G, N), Cm.reshape(b, T, G, N), self.chunk, state.get("ssm"))
        state["ssm"] = S.to(x.dtype)
        if cache is not None:
            cache.seen += T
        y = y + getattr(*self.D).float()[:, None] * xs.float()               # (B, T, H, P)
        y = gated_rms_norm(y.reshape(b, T, I), z, mixer.norm.weight, G, self.eps)   # (B, T, I)
        return x + dense(y.to(x.dtype), mixer.out_proj)                      # (B, T, D)
