"""The decode state of one node between calls (mirror of `runtime_torch/cache.py`), for any op that declares some
(`Op.decode_state`): `seen` tokens so far, K and V of attention (`extend`), and every other declared state by its
name in `state` (a convolution's last inputs channels-last (B, K-1, D), an SSM state), replaced by the op at each
call. `runtime_common/decode.py` makes one per stateful node.
Shape vocabulary: B batch, kv key/value heads, S cached positions, T new positions, hs head size.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx


class LayerCache:
    """Starts empty; `reserve` is accepted for the shared decode session (MLX arrays are not preallocated)."""

    def __init__(self, reserve: int = 0):
        self.seen = 0
        self.k: Optional[mx.array] = None       # (B, kv, S, hs)
        self.v: Optional[mx.array] = None       # (B, kv, S, hs)
        self.state: dict[str, mx.array] = {}

    def arrays(self) -> list[mx.array]:
        return [a for a in (self.k, self.v, *self.state.values()) if a is not None]

    def extend(self, k: mx.array, v: mx.array, window: Optional[int]) -> tuple[mx.array, mx.array, int]:
        """Append k, v (B, kv, T, hs); return all keys and values a query of this call sees (B, kv, S, hs) and the
        number of positions cached before. A sliding layer keeps the last window - 1 positions afterwards."""
        n_cached = 0
        if self.k is not None:
            n_cached = self.k.shape[2]
            k = mx.concatenate((self.k, k), axis=2)                          # (B, kv, S, hs)
            v = mx.concatenate((self.v, v), axis=2)
        keep = k.shape[2] if window is None else min(k.shape[2], window - 1)
        self.k, self.v = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]
        return k, v, n_cached
