"""Torch implementations of `compiler/ops/heads.py`: SegmentationHead, ClassificationHead, DetectionHead, OCRHead.

Every head drops the prefix (CLS / register) tokens of its grid input first, then runs the op docstring's
computation. GELU is the exact (erf) form. Shapes: B batch, h x w the patch grid, N = h*w, D input width, F hidden
width, A anchors, C classes, L max_seq_len.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import dense
from ..node import Node
from ..registry import implements


class _MLP(Node):
    """fc1 -> GELU -> fc2 (the declared `fc1.*`, `fc2.*`)."""

    def forward(self, x):
        return dense(F.gelu(dense(x, self.fc1)), self.fc2)


class _GridMLP(_MLP):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.prefix = in_types[0].prefix
        self.h, self.w = in_types[0].grid

    def patches(self, x):
        return x[:, self.prefix:] if self.prefix else x                         # (B, N, D)


@implements("SegmentationHead")
class SegmentationHead(_GridMLP):
    def forward(self, x):
        y = super().forward(self.patches(x))                                    # (B, N, C)
        return y.reshape(y.shape[0], self.h, self.w, -1)                        # (B, h, w, C)


@implements("ClassificationHead")
class ClassificationHead(_MLP):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        t = in_types[0]
        self.pool = None if t.kind == "vector" else p.pool
        self.prefix = t.prefix

    def forward(self, x):
        if self.pool == "cls":
            x = x[:, 0]                                                         # (B, D)
        elif self.pool == "mean":
            x = x[:, self.prefix:].mean(dim=1)                                  # (B, D)
        return super().forward(x)                                               # (B, C)


@implements("DetectionHead")
class DetectionHead(_GridMLP):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.A, self.C, self.box = p.num_anchors, p.num_classes, p.box_dim

    def forward(self, x):
        y = super().forward(self.patches(x))                                    # (B, N, A*(C+4))
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

    def forward(self, x):
        x = x[:, self.prefix:] if self.prefix else x                            # (B, N, D)
        B, N, D = x.shape
        m = x.transpose(1, 2).reshape(B, D, self.h, self.w)                     # (B, D, h, w)
        m = F.gelu(F.conv2d(m, self.conv_in.weight, self.conv_in.bias))          # (B, F, h, w)
        m = F.gelu(F.conv2d(m, self.conv.weight, self.conv.bias, padding=self.pad, groups=self.groups))  # (B, F, h, w)
        m = m.permute(0, 2, 3, 1)                                               # (B, h, w, F)
        return {"text": dense(m, self.text),                                    # (B, h, w, L)
                "geometry": torch.sigmoid(dense(m, self.geometry)).reshape(B, N, 4)}   # (B, N, 4)
