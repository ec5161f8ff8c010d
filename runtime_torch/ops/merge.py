"""Torch implementations of `compiler/ops/merge.py`: Concat, Select, Reshape (no parameters).

Which axis, how many prefix (CLS / register) tokens, and the grid come from the compiler's input types; the rules
are those of the ops' docstrings and shape functions.
"""
from __future__ import annotations

import torch

from compiler.ops.merge import Concat as ConcatOp

from ..node import Node
from ..registry import implements


@implements("Concat")
class Concat(Node):
    """sequence: (B, N1, D) + (B, N2, D) -> (B, N1+N2, D); channels: the last dim of tokens, C of maps."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.dim = ConcatOp.axis(p, in_types[0])

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)


@implements("Select")
class Select(Node):
    """cls: token 0 -> (B, D); patches: drop the prefix tokens; prefix: keep only them; range: tokens [start, stop)."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.tokens = p.tokens
        prefix = in_types[0].prefix
        self.start, self.stop = {"cls": (0, None), "patches": (prefix, None), "prefix": (0, prefix),
                                 "range": (p.start, p.stop)}[p.tokens]

    def forward(self, x):
        if self.tokens == "cls":
            return x[:, 0]                              # (B, N, D) -> (B, D)
        return x[:, self.start:self.stop]               # (B, N', D)

    def extra_repr(self) -> str:
        return f"{self.tokens}, [{self.start}:{self.stop}]"


@implements("Reshape")
class Reshape(Node):
    """tokens: (B, C, H, W) -> (B, H*W, C); map: (B, N, D) -> (B, D, h, w), or with `channels` C and D = C*s*s
    (C outermost, then the s x s sub-grid row-major) -> (B, C, h*s, w*s); grid_tokens: -> (B, h, w, D).
    Grid tokens are the last h*w of the sequence: prefix (CLS / register) tokens in front are dropped."""

    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        t = in_types[0]
        self.to = p.to
        self.prefix = t.prefix
        self.h, self.w = t.grid if t.grid else (0, 0)
        self.channels = p.channels or 0
        self.s = int(round((t.width // p.channels) ** 0.5)) if p.channels and p.to == "map" else 1

    def forward(self, x):
        if self.to == "tokens":
            return x.flatten(2).transpose(1, 2)                                   # (B, H*W, C)
        x = x[:, self.prefix:] if self.prefix else x                              # (B, h*w, D)
        b, _, d = x.shape
        if self.to == "grid_tokens":
            return x.reshape(b, self.h, self.w, d)                                # (B, h, w, D)
        if not self.channels:
            return x.transpose(1, 2).reshape(b, d, self.h, self.w)                # (B, D, h, w)
        c, s = self.channels, self.s
        x = x.reshape(b, self.h, self.w, c, s, s)                                 # (B, h, w, C, s, s)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, self.h * s, self.w * s)  # (B, C, h*s, w*s)
