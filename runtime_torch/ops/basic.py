"""Torch implementations of the leaf layers of `compiler/ops/basic.py`.

Linear, Embedding, Conv2d, LayerNorm, RMSNorm, Activation, Flatten: forward code over the parameters the op
declarations built (`runtime_torch/node.py`; torch's and transformers' layouts: Linear `weight` (out, in), Conv2d
`weight` (out, in/groups, k, k)), with the shared kernels of `runtime_torch/kernels.py`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import ACT, dense, rms_norm
from ..node import Node
from ..registry import implements


@implements("Linear")
class Linear(Node):
    """y = x W^T + b; a tied head (`tied_name` set) owns no weight: the model shares its owner's."""

    def forward(self, x):
        return dense(x, self)                           # (..., D) -> (..., out); few rows split across threads


@implements("Embedding")
class Embedding(Node):
    """(B, T) ids -> (B, T, D); `scale` is rounded to the compute dtype first, as transformers' Gemma does."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.scale = p.scale

    def forward(self, ids):
        x = F.embedding(ids, self.weight)               # (B, T) -> (B, T, D)
        if self.scale is not None:
            x = x * torch.tensor(self.scale, dtype=x.dtype, device=x.device)
        return x


@implements("Conv2d")
class Conv2d(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.stride, self.padding, self.groups = p.stride, p.padding, p.groups

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)  # (B, C', H', W')


@implements("LayerNorm")
class LayerNorm(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.shape, self.eps = (p.dim,), p.eps

    def forward(self, x):
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


@implements("RMSNorm")
class RMSNorm(Node):
    """x * rsqrt(mean(x^2) + eps) * (offset + weight), as transformers computes it (`kernels.rms_norm`)."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.eps, self.offset = p.eps, p.offset

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps, self.offset)


@implements("Activation")
class Activation(Node):
    """gelu is the exact (erf) form, gelu_tanh the tanh approximation."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.fn_name = p.fn
        self.fn = ACT[p.fn]

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.fn_name


@implements("Flatten")
class Flatten(Node):
    """(B, C, H, W) -> (B, H*W, C), row-major over the grid (token i is at row i // W, column i % W)."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)             # (B, C, H*W) -> (B, H*W, C)
