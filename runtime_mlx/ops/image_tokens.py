"""MLX implementation of `compiler/ops/image_tokens.py` (mirror of `runtime_torch/ops/image_tokens.py`):
MergeImageTokens (nanoVLM's placeholder overwrite).

MLX has no boolean-mask assignment: the k-th placeholder (row-major) takes image row k, found by a running count of
placeholders, and `mx.where` keeps the text elsewhere.
"""
from __future__ import annotations

import mlx.core as mx

from ..node import Node
from ..registry import implements


@implements("MergeImageTokens")
class MergeImageTokens(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.token = p.image_token_id

    def __call__(self, text, image, ids):
        mask = (ids == self.token).reshape(-1)                                  # (B*T,)
        n, want = int(mask.sum()), image.shape[0] * image.shape[1]
        if n != want:
            raise ValueError(f"MergeImageTokens: {n} placeholder tokens (id {self.token}) for {want} image tokens")
        B, T, D = text.shape
        rows = image.reshape(-1, image.shape[-1]).astype(text.dtype)           # (n, D)
        k = mx.maximum(mx.cumsum(mask.astype(mx.int32)) - 1, 0)                 # placeholder rank per position
        out = mx.where(mask[:, None], rows[k], text.reshape(B * T, D))
        return out.reshape(B, T, D)                                             # (B, T, D)

    def _extra_repr(self) -> str:
        return f"image_token_id={self.token}"
