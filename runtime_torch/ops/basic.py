"""Torch implementations of the leaf layers of `compiler/ops/basic.py`.

Linear, Embedding, Conv2d, LayerNorm, RMSNorm, Activation, Flatten. Parameter names and layouts are the ops' weight
declarations (torch's and transformers': Linear `weight` (out, in), Conv2d `weight` (out, in/groups, k, k)).
Parameters are allocated uninitialised; `runtime_torch.build` initialises them from the seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import FUNCTIONS
from ..pack import linear
from ..registry import implements


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape))


@implements("Linear")
class Linear(nn.Module):
    """y = x W^T + b; a tied head (`tied_name` set) owns no weight: the model shares its owner's."""

    def __init__(self, p, in_types):
        super().__init__()
        if p.tied_name:
            self.register_parameter("weight", None)     # set to the owner's Parameter by OmnicModel
        else:
            self.weight = _param(p.out_features, p.in_features)
        self.bias = _param(p.out_features) if p.bias else None
        self.softcap = p.softcap

    def forward(self, x):
        y = linear(x, self.weight, self.bias)           # (..., D) -> (..., out); few rows split across threads
        if self.softcap is not None:                    # Gemma's final_logit_softcapping, transformers' order of ops
            y = torch.tanh(y / self.softcap) * self.softcap
        return y


@implements("Embedding")
class Embedding(nn.Module):
    """(B, T) ids -> (B, T, D); `scale` is rounded to the compute dtype first, as transformers' Gemma does."""

    def __init__(self, p, in_types):
        super().__init__()
        self.weight = _param(p.num_embeddings, p.embedding_dim)
        self.scale = p.scale

    def forward(self, ids):
        x = F.embedding(ids, self.weight)               # (B, T) -> (B, T, D)
        if self.scale is not None:
            x = x * torch.tensor(self.scale, dtype=x.dtype, device=x.device)
        return x


@implements("Conv2d")
class Conv2d(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.weight = _param(p.out_channels, p.in_channels // p.groups, p.kernel_size, p.kernel_size)
        self.bias = _param(p.out_channels) if p.bias else None
        self.stride, self.padding, self.groups = p.stride, p.padding, p.groups

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)  # (B, C', H', W')


@implements("LayerNorm")
class LayerNorm(nn.Module):
    def __init__(self, p, in_types):
        super().__init__()
        self.weight = _param(p.dim)
        self.bias = _param(p.dim) if p.bias else None
        self.shape, self.eps = (p.dim,), p.eps

    def forward(self, x):
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


@implements("RMSNorm")
class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (offset + weight), normalised in float32 and cast back.

    The two forms of transformers, bit for bit: offset 0 (Llama, Qwen, Mistral) casts the normalised x back to the
    input dtype and then multiplies by `weight`; offset != 0 (Gemma: 1 + weight) multiplies in float32, then casts.
    """

    def __init__(self, p, in_types):
        super().__init__()
        self.weight = _param(p.dim)
        self.eps, self.offset = p.eps, p.offset

    def forward(self, x):
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset == 0.0:
            return (self.weight * h.to(dtype)).to(dtype)
        return (h * (self.offset + self.weight.float())).to(dtype)


@implements("Activation")
class Activation(nn.Module):
    """gelu is the exact (erf) form, gelu_tanh the tanh approximation."""

    def __init__(self, p, in_types):
        super().__init__()
        self.fn_name = p.fn
        self.fn = FUNCTIONS[p.fn]

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.fn_name


@implements("Flatten")
class Flatten(nn.Module):
    """(B, C, H, W) -> (B, H*W, C), row-major over the grid (token i is at row i // W, column i % W)."""

    def __init__(self, p, in_types):
        super().__init__()

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)             # (B, C, H*W) -> (B, H*W, C)
