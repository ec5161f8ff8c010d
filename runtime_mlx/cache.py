"""The decode state of one node between calls (mirror of `runtime_torch/cache.py`), for any op that declares some
(`Op.decode_state`): `seen` tokens so far, K and V of attention in preallocated buffers (`extend`), and every other
declared state by its name in `state` (a convolution's last inputs channels-last (B, K-1, D), an SSM state),
replaced by the op at each call. `runtime_common/decode.py` makes one per stateful node.

K and V are written into buffers in place (`buf[..., n:n+T, :] = k`, an MLX slice update, which reuses the buffer
when nothing else holds it), as mlx-lm's `KVCache` does, instead of concatenating a new copy of the whole cache at
every token. The first call makes the buffers exactly as long as its keys or the session's `reserve` (`generate`
reserves prompt + new tokens), whichever is longer, so a prefill holds exactly the report's `decode_state`; a
buffer that fills up grows to the next multiple of STEP positions (mlx-lm's step, 256). Sliding layers keep only
the last window - 1 positions (concatenated and trimmed, as the torch runtime does).
Shape vocabulary: B batch, kv key/value heads, S cached positions, T new positions, hs head size (K's and V's may
differ: an MLA latent and its rotary part).
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

#: positions a full K / V buffer grows by (rounded up to a multiple of it), as mlx-lm's KVCache.step
STEP = 256


class LayerCache:
    """Starts empty; `kbuf`, `vbuf` hold `capacity` positions of which the first `n` are filled (`k`, `v`)."""

    def __init__(self, reserve: int = 0):
        self.seen = 0
        self.reserve = reserve
        self.kbuf: Optional[mx.array] = None    # (B, kv, capacity, hs)
        self.vbuf: Optional[mx.array] = None
        self.n = 0                              # filled positions of kbuf / vbuf
        self.state: dict[str, mx.array] = {}

    @property
    def k(self) -> Optional[mx.array]:          # (B, kv, S, hs)
        return None if self.kbuf is None else self.kbuf[:, :, :self.n]

    @property
    def v(self) -> Optional[mx.array]:          # (B, kv, S, hs)
        return None if self.vbuf is None else self.vbuf[:, :, :self.n]

    @property
    def capacity(self) -> int:
        return 0 if self.kbuf is None else self.kbuf.shape[2]

    def arrays(self) -> list[mx.array]:
        """Every array of state held (the K, V buffers whole)."""
        return [a for a in (self.kbuf, self.vbuf, *self.state.values()) if a is not None]

    def extend(self, k: mx.array, v: mx.array, window: Optional[int]) -> tuple[mx.array, mx.array, int]:
        """Append k, v (B, kv, T, hs); return all keys and values a query of this call sees (B, kv, S, hs) and the
        number of positions cached before. A sliding layer keeps the last window - 1 positions afterwards."""
        if self.kbuf is not None and (self.kbuf.shape[:2] != k.shape[:2]):
            raise ValueError(f"this cache holds batch x kv heads {tuple(self.kbuf.shape[:2])}; the new keys are "
                             f"{tuple(k.shape[:2])} (start a new decode session for another batch)")
        n_cached, T = self.n, k.shape[2]
        if window is not None:
            if self.kbuf is not None:
                k = mx.concatenate((self.k, k), axis=2)                     # (B, kv, S, hs)
                v = mx.concatenate((self.v, v), axis=2)
            keep = min(k.shape[2], window - 1)
            self.kbuf, self.vbuf = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]
            self.n = keep
            return k, v, n_cached
        end = n_cached + T
        if end > self.capacity:
            self._grow(k, v, end)
        self.kbuf[:, :, n_cached:end] = k                                   # in place: one slice update
        self.vbuf[:, :, n_cached:end] = v
        self.n = end
        if end == self.capacity:
            return self.kbuf, self.vbuf, n_cached
        return self.kbuf[:, :, :end], self.vbuf[:, :, :end], n_cached

    def _grow(self, k: mx.array, v: mx.array, end: int) -> None:
        """Room for `end` positions: the first buffers hold max(end, reserve); later ones the next multiple of
        STEP, the filled part copied over."""
        cap = max(end, self.reserve) if self.kbuf is None else -(-end // STEP) * STEP
        B, kv = k.shape[:2]
        kb = mx.zeros((B, kv, cap, k.shape[3]), dtype=k.dtype)
        vb = mx.zeros((B, kv, cap, v.shape[3]), dtype=v.dtype)
        if self.n:
            kb[:, :, :self.n] = self.k
            vb[:, :, :self.n] = self.v
        self.kbuf, self.vbuf = kb, vb
