"""The decode state of one node between calls, for any op that declares some (`Op.decode_state` in
`compiler/registry.py`): `seen` tokens so far (the position of the next call's first token), K and V of attention in
preallocated buffers (`extend`), and every other declared state (a convolution's last inputs, an SSM state) by its
declared name in `state`, replaced by the op at each call. `runtime_common/decode.py` makes one per stateful node.
Shape vocabulary: B batch, kv key/value heads, S cached positions, T new positions, hs head size.
"""
from __future__ import annotations

from typing import Optional

import torch


class LayerCache:
    """Starts empty. K and V live in buffers with room for `reserve` tokens (set by the caller that knows the final
    length, e.g. `generate`), grown by doubling past it; `k`, `v` are views of the filled part."""

    def __init__(self, reserve: int = 0):
        self.seen = 0
        self.reserve = reserve
        self.kbuf: Optional[torch.Tensor] = None    # (B, kv, capacity, hs)
        self.vbuf: Optional[torch.Tensor] = None
        self.n = 0                                  # filled positions of kbuf / vbuf
        self.state: dict[str, torch.Tensor] = {}    # other declared states, by name

    @property
    def k(self) -> Optional[torch.Tensor]:   # (B, kv, S, hs)
        return None if self.kbuf is None else self.kbuf.narrow(2, 0, self.n)

    @property
    def v(self) -> Optional[torch.Tensor]:   # (B, kv, S, hs)
        return None if self.vbuf is None else self.vbuf.narrow(2, 0, self.n)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of state held (the K, V buffers whole)."""
        return [t for t in (self.kbuf, self.vbuf, *self.state.values()) if t is not None]

    def extend(self, k: torch.Tensor, v: torch.Tensor, window: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, kv, T, hs); return all keys and values a query of this call sees (B, kv, S, hs). A
        sliding layer keeps the last window - 1 positions afterwards (all a later query can see)."""
        if self.kbuf is not None and self.kbuf.shape[:2] != k.shape[:2]:
            raise ValueError(f"this cache holds batch x kv heads {tuple(self.kbuf.shape[:2])}; the new keys are "
                             f"{tuple(k.shape[:2])} (start a new decode session for another batch)")
        if window is not None:
            if self.kbuf is not None:
                k, v = torch.cat((self.kbuf, k), dim=2), torch.cat((self.vbuf, v), dim=2)
            keep = min(k.shape[2], window - 1)
            trim = (lambda t: t[:, :, t.shape[2] - keep:].clone()) if keep < k.shape[2] else (lambda t: t)
            self.kbuf, self.vbuf = trim(k), trim(v)        # a copy: the view would hold the whole of k alive
            self.n = keep
            return k, v
        end = self.n + k.shape[2]
        if self.kbuf is None or end > self.kbuf.shape[2]:
            cap = max(end, self.reserve, 2 * self.kbuf.shape[2] if self.kbuf is not None else 0)
            kb = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            vb = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
            if self.n:
                kb.narrow(2, 0, self.n).copy_(self.k)
                vb.narrow(2, 0, self.n).copy_(self.v)
            self.kbuf, self.vbuf = kb, vb
        T = k.shape[2]
        self.kbuf.narrow(2, self.n, T).copy_(k)          # narrow, not [:, :, a:b]: decoding runs this per token
        self.vbuf.narrow(2, self.n, T).copy_(v)
        self.n = end
        return self.kbuf.narrow(2, 0, end), self.vbuf.narrow(2, 0, end)

    def push(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`extend` for one new position (k, v (B, kv, 1, hs)) of a layer without a window, in the fewest tensor
        ops while the buffers have room (decoding runs it per token and layer); the seen count is the caller's."""
        n = self.n
        if self.kbuf is None or n >= self.kbuf.shape[2] or self.kbuf.shape[:2] != k.shape[:2]:
            return self.extend(k, v, None)
        self.kbuf.narrow(2, n, 1).copy_(k)
        self.vbuf.narrow(2, n, 1).copy_(v)
        self.n = n + 1
        return self.kbuf.narrow(2, 0, n + 1), self.vbuf.narrow(2, 0, n + 1)
