"""MLX implementations of the leaf layers of `compiler/ops/basic.py` (mirror of `runtime_torch/ops/basic.py`).

Linear, Embedding, Conv2d, LayerNorm, RMSNorm, Activation, Flatten: forward code over the parameters the op
declarations built (`runtime_mlx/node.py`; layouts are torch's except convolution kernels, which are channels-last,
`runtime_mlx/layout.py`), with the shared kernels of `runtime_mlx/kernels.py`. Images stay (B, C, H, W) between
nodes, as in torch; Conv2d transposes to (B, H, W, C) and back around `mx.conv2d`.
"""
from __future__ import annotations

import mlx.core as mx
from mlx import nn

from ..kernels import ACT, dense, rms_norm
from ..node import Node
from ..registry import implements, tied, tied_owner


@implements("Linear")
class Linear(Node):
    """y = x W^T + b; a tied head (`tied_name` set) owns no weight: it reads its owner's."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.is_tied = bool(p.tied_name)

    def __call__(self, x):
        if not self.is_tied:
            return dense(x, self)                         # (..., D) -> (..., out)
        owner = tied_owner(self, "weight")[0]
        y = owner.as_linear(x) if "scales" in owner else x @ tied(self, "weight").T   # quantised table: as_linear
        return y + self.bias if "bias" in self else y

    def to_quantized(self, group_size: int, bits: int, mode: str = "affine", **kw):
        """For `mlx.nn.quantize`: an `nn.QuantizedLinear` of this layer (the same names: weight, scales, biases,
        bias); a tied head is never asked (runtime_mlx/quantize.py quantises its owner)."""
        return nn.QuantizedLinear.from_linear(self, group_size, bits, mode)


@implements("Embedding")
class Embedding(Node):
    """(B, T) ids -> (B, T, D); `scale` is rounded to the compute dtype first, as transformers' Gemma does."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.scale = p.scale

    def __call__(self, ids):
        x = self.weight[ids]                              # (B, T) -> (B, T, D)
        if self.scale is not None:
            x = x * mx.array(self.scale, dtype=x.dtype)
        return x

    def to_quantized(self, group_size: int, bits: int, mode: str = "affine", **kw):
        """For `mlx.nn.quantize`: a QuantizedEmbedding that keeps this table's `scale` (runtime_mlx/quantize.py)."""
        from ..quantize import QuantizedEmbedding
        return QuantizedEmbedding.from_embedding(self, group_size, bits, mode)


@implements("Conv2d")
class Conv2d(Node):
    """Kernel (O, kh, kw, I/groups) (MLX layout); input and output (B, C, H, W)."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.stride, self.padding, self.groups = p.stride, p.padding, p.groups

    def __call__(self, x):
        x = x.transpose(0, 2, 3, 1)                                               # (B, H, W, C)
        y = mx.conv2d(x, self.weight, self.stride, self.padding, 1, self.groups)  # (B, H', W', C')
        if "bias" in self:
            y = y + self.bias
        return y.transpose(0, 3, 1, 2)                    # (B, C', H', W')


@implements("LayerNorm")
class LayerNorm(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.eps = p.eps

    def __call__(self, x):
        return mx.fast.layer_norm(x, self.weight, self.get("bias"), self.eps)


@implements("RMSNorm")
class RMSNorm(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.eps, self.offset = p.eps, p.offset

    def __call__(self, x):
        return rms_norm(x, self.weight, self.eps, self.offset)


@implements("Activation")
class Activation(Node):
    """gelu is the exact (erf) form, gelu_tanh the tanh approximation."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.fn_name = p.fn
        self.keep(fn=ACT[p.fn])

    def __call__(self, x):
        return self.fn(x)

    def _extra_repr(self) -> str:
        return self.fn_name


@implements("Flatten")
class Flatten(Node):
    """(B, C, H, W) -> (B, H*W, C), row-major over the grid (token i is at row i // W, column i % W)."""

    def __call__(self, x):
        b, c = x.shape[:2]
        return x.reshape(b, c, -1).transpose(0, 2, 1)     # (B, C, H*W) -> (B, H*W, C)
