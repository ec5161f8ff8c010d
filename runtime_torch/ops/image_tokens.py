"""Torch implementation of `compiler/ops/image_tokens.py`: MergeImageTokens (nanoVLM's placeholder overwrite)."""
from __future__ import annotations

import torch

from ..node import Node
from ..registry import implements


@implements("MergeImageTokens")
class MergeImageTokens(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.token = p.image_token_id

    def forward(self, text, image, ids):
        mask = ids == self.token                                                # (B, T)
        if torch.compiler.is_exporting():
            return self.gather(text, image, mask)
        n, want = int(mask.sum()), image.shape[0] * image.shape[1]
        if n != want:
            raise ValueError(f"MergeImageTokens: {n} placeholder tokens (id {self.token}) for {want} image tokens")
        out = text.clone()
        out[mask] = image.reshape(-1, image.shape[-1]).to(text.dtype)           # row-major placeholder order
        return out                                                              # (B, T, D)

    @staticmethod
    def gather(text, image, mask):
        """The same overwrite with static shapes (torch.export, ONNX): the k-th placeholder takes image row k."""
        rows = image.reshape(-1, image.shape[-1]).to(text.dtype)               # (B*N, D)
        k = (torch.cumsum(mask.reshape(-1).long(), 0) - 1).clamp(min=0)         # (B*T,) placeholder rank
        picked = rows[k.clamp(max=rows.shape[0] - 1)].view_as(text)            # (B, T, D)
        return torch.where(mask[..., None], picked, text)                       # (B, T, D)

    def extra_repr(self) -> str:
        return f"image_token_id={self.token}"
