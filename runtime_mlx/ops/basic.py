"""MLX implementations of the leaf layers of `compiler/ops/basic.py` (mirror of `runtime_torch/ops/basic.py`).

Linear, Embedding, Conv2d, LayerNorm, RMSNorm, Activation, Flatten. Parameter names are the ops' declarations;
layouts are torch's except convolution kernels, which are channels-last (`runtime_mlx/layout.py`). Images stay
(B, C, H, W) between nodes, as in torch; Conv2d transposes to (B, H, W, C) and back around `mx.conv2d`.
Parameters are allocated as zeros; `runtime_mlx.build` initialises them from the seed.
"""
from __future__ import annotations

import mlx.core as mx
from mlx import nn

from ..activations import FUNCTIONS
from ..registry import implements, tied


@implements("Linear")
class Linear(nn.Module):
    """y = x W^T + b; a tied head (`tied_name` set) owns no weight: it reads its owner's."""

    def __init__(self, p, in_types):
        super().__init__()
        self.is_tied = bool(p.tied_name)
        if not self.is_tied:
            self.weight = mx.zeros((p.out_features, p.in_features))
        if p.bias:
            self.bias = mx.zeros((p.out_features,))
        self.softcap = p.softcap

    def __call__(self, x):
        w = tied(self, "weight") if self.is_tied else self.weight
        y = x @ w.T                                       # (..., D) -> (..., out)
        y = y + self.bias if "bias" in self else y
        if self.softcap is not None:                      # Gemma's final_logit_softcapping
            y = mx.tanh(y / self.softcap) * self.softcap
        return y


@implements("Embedding")
class Embedding(nn.Module):
    """(B, T) ids -> (B, T, D); `scale` is rounded to the compute dtype first, as transformers' Gemma does."""

    def __init__(self, p, in_types):
        super().__init__()
        self.weight = mx.zeros((p.num_embeddings, p.embedding_dim))
        self.scale = p.scale

    def __call__(self, ids):
        x = self.weight[ids]                              # (B, T) -> (B, T, D)
        if self.scale is not None:
            x = x * mx.array(self.scale, dtype=x.dtype)
        return x


@implements("Conv2d")
class Conv2d(nn.Module):
    """Kernel (O, kh, kw, I/groups) (MLX layout); input and output (B, C, H, W)."""

    def __init__(self, p, in_types):
        super().__init__()
        k = p.kernel_size
        self.weight = mx.zeros((p.out_channels, k, k, p.in_channels // p.groups))
        if p.bias:
            self.bias = mx.zeros((p.out_channels,))
        self.stride, self.padding, self.groups = p.stride, p.padding, p.groups

    def __call__(self, x):
        x = x.transpose(0, 2, 3, 1)                                               # (B, H, W, C)
        y = mx.conv2d(x, self.weight, self.stride, self.padding, 1, self.groups)  # (B, H', W', C')
        if "bias" in self:
            y = y + self.bias
        return y.transpose(0, 3, 1, 2)                    # (B, C', H', W')


@implements("LayerNorm")
class LayerNorm(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.weight = mx.zeros((p.dim,))
        if p.bias:
            self.bias = mx.zeros((p.dim,))
        self.eps = p.eps

    def __call__(self, x):
        return mx.fast.layer_norm(x, self.weight, self.get("bias"), self.eps)


def rms_norm(x, weight, eps: float, offset: float):
    """x * rsqrt(mean(x^2) + eps) * (offset + weight), as `runtime_torch`'s RMSNorm: offset 0 casts the normalised x
    to the input dtype before the weight; offset != 0 (Gemma) multiplies in float32, then casts."""
    if offset == 0.0:
        return mx.fast.rms_norm(x, weight, eps)
    h = mx.fast.rms_norm(x.astype(mx.float32), offset + weight.astype(mx.float32), eps)
    return h.astype(x.dtype)


@implements("RMSNorm")
class RMSNorm(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.weight = mx.zeros((p.dim,))
        self.eps, self.offset = p.eps, p.offset

    def __call__(self, x):
        return rms_norm(x, self.weight, self.eps, self.offset)


@implements("Activation")
class Activation(nn.Module):
    """gelu is the exact (erf) form, gelu_tanh the tanh approximation."""

    def __init__(self, p, in_types):
        super().__init__()
        self.fn_name = p.fn
        object.__setattr__(self, "fn", FUNCTIONS[p.fn])

    def __call__(self, x):
        return self.fn(x)

    def _extra_repr(self) -> str:
        return self.fn_name


@implements("Flatten")
class Flatten(nn.Module):
    """(B, C, H, W) -> (B, H*W, C), row-major over the grid (token i is at row i // W, column i % W)."""

    def __init__(self, p, in_types):
        super().__init__()

    def __call__(self, x):
        b, c = x.shape[:2]
        return x.reshape(b, c, -1).transpose(0, 2, 1)     # (B, C, H*W) -> (B, H*W, C)
