"""MLX implementations of `compiler/ops/heads.py` (mirror of `runtime_torch/ops/heads.py`): SegmentationHead,
ClassificationHead, DetectionHead, OCRHead.

Every head drops the prefix (CLS / register) tokens of its grid input first, then runs the op docstring's
computation. GELU is the exact (erf) form. OCRHead's kernels are channels-last (`layout.py`) and its map is kept
(B, h, w, F) throughout. Shapes: B batch, h x w the patch grid, N = h*w, D input width, F hidden width,
A anchors, C classes, L max_seq_len.
"""
from __future__ import annotations

import mlx.core as mx

from ..kernels import dense, gelu
from ..node import Node
from ..registry import implements


class _MLP(Node):
    """fc1 -> GELU -> fc2 (the declared `fc1.*`, `fc2.*`)."""

    def __call__(self, x):
        return dense(gelu(dense(x, self.fc1)), self.fc2)


class _GridMLP(_MLP):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.prefix = in_types[0].prefix
        self.h, self.w = in_types[0].grid

    def patches(self, x):
        return x[:, self.prefix:] if self.prefix else x                         # (B, N, D)


@implements("SegmentationHead")
class SegmentationHead(_GridMLP):
    def __call__(self, x):
        y = super().__call__(self.patches(x))                                   # (B, N, C)
        return y.reshape(y.shape[0], self.h, self.w, -1)                        # (B, h, w, C)


@implements("ClassificationHead")
class ClassificationHead(_MLP):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        t = in_types[0]
        self.pool = None if t.kind == "vector" else p.pool
        self.prefix = t.prefix

    def __call__(self, x):
        if self.pool == "cls":
            x = x[:, 0]                                                         # (B, D)
        elif self.pool == "mean":
            x = x[:, self.prefix:].mean(axis=1)                                 # (B, D)
        return super().__call__(x)                                              # (B, C)


@implements("DetectionHead")
class DetectionHead(_GridMLP):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.A, self.C, self.box = p.num_anchors, p.num_classes, p.box_dim

    def __call__(self, x):
        y = super().__call__(self.patches(x))                                   # (B, N, A*(C+4))
        B, N, _ = y.shape
        return {"logits": y[..., :self.A * self.C].reshape(B, N, self.A, self.C),   # (B, N, A, C)
                "boxes": y[..., self.A * self.C:].reshape(B, N, self.A, self.box)}  # (B, N, A, 4)


@implements("OCRHead")
class OCRHead(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.prefix = in_types[0].prefix
        self.h, self.w = in_types[0].grid
        self.groups, self.pad = (p.hidden_dim if p.depthwise else 1), p.kernel_size // 2

    def __call__(self, x):
        x = x[:, self.prefix:] if self.prefix else x                            # (B, N, D)
        B, N, D = x.shape
        m = x.reshape(B, self.h, self.w, D)                                     # (B, h, w, D)
        m = gelu(mx.conv2d(m, self["conv_in"]["weight"]) + self["conv_in"]["bias"])           # (B, h, w, F)
        m = gelu(mx.conv2d(m, self["conv"]["weight"], padding=self.pad, groups=self.groups)
                 + self["conv"]["bias"])                                        # (B, h, w, F)
        return {"text": dense(m, self["text"]),                                 # (B, h, w, L)
                "geometry": mx.sigmoid(dense(m, self["geometry"])).reshape(B, N, 4)}   # (B, N, 4)
