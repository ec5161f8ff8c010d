"""The one-token decoding step of a plain attention block, in the fewest tensor ops its forward allows.

A decoding step runs each block on one new token per row: four matrix-vector products (q|k|v, o, gate|up, down)
that read the block's weights, and the small ops around them. On the CPU the small ops are what a step spends
beyond reading the weights (each costs more than its size suggests: the weight stream has just evicted its inputs
from the caches), so `OneToken` runs a block's step in about 14 of them: RMSNorm, the q|k|v product, RoPE on q and
k at once (with T = 1, (B, T, heads, hs) and (B, heads, T, hs) are one layout, so no transposes), the K/V append
(`LayerCache.push`), attention (no mask: one query after the cache sees every key), o's product and the residual add
in one torch.addmv, RMSNorm, gate|up, SiLU x up, down's product and residual in one addmv (`kernels.linear_add`).
What it computes is TransformerBlock.forward's (tests/test_decode_fast.py: same greedy tokens, logits within
rounding: addmv and addcmul round once where the plain path rounds twice).

`one_token(block)` gives the step of a block it covers (causal full attention, pre-norms only, 1-D RoPE over whole
heads or none, no q/k norm, LayerScale or soft-capping, its q|k|v packed or checkpoint-fused; a gated MLP packed
or fused, or any other feed-forward part run through the block's own `ffn`, so GQA_MoE_Layer too), None otherwise;
`DecodeSession` uses it for the steps of one token and the block's own forward for everything else.
Shape vocabulary: B batch, D width, H heads, kv key/value heads, hs head size, S cached + new keys.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .cache import LayerCache
from .kernels import linear, linear_add
from .ops.transformer import TransformerBlock


class OneToken:
    """`block(x, cache=cache)` for x (B, 1, D); other lengths go to the block itself."""

    def __init__(self, block, qkv: tuple, gate_up: Optional[tuple]):
        self.block, self.p = block, block.p
        self.qkv, self.gate_up = qkv, gate_up          # (weight (n, D), bias or None), of packed or fused products
        self.H, self.KV, self.hd = block.H, block.KV, block.hd
        self.rope = self.p.rope == "1d"

    def __call__(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        blk = self.block
        if x.shape[1] != 1:
            return blk(x, cache=cache)
        B, H, KV, hd = x.shape[0], self.H, self.KV, self.hd
        pos = cache.seen
        h = blk.norm(x, blk.norm1)
        qkv = linear(h, *self.qkv)                                           # (B, 1, (H + 2kv) hs)
        qk = qkv.narrow(-1, 0, (H + KV) * hd).view(B, H + KV, 1, hd)          # (B, H + kv, 1, hs)
        if self.rope:
            cos, sin = blk._rope_rows(pos, 1, h)                             # (1, hs) each
            qk = torch.addcmul(qk * cos, qk.roll(hd // 2, dims=-1), sin)     # kernels.apply_rope in 3 ops
        k, v = cache.push(qk.narrow(1, H, KV), qkv.narrow(-1, (H + KV) * hd, KV * hd).view(B, KV, 1, hd))
        cache.seen = pos + 1
        y = F.scaled_dot_product_attention(qk.narrow(1, 0, H), k, v, scale=self.p.scale,
                                           enable_gqa=KV != H)               # (B, H, 1, hs)
        o = blk.o
        y = y.view(B, 1, H * hd)
        x = linear_add(x, y, o.weight) if o.bias is None else x + linear(y, o.weight, o.bias)   # (B, 1, D)
        h = blk.norm(x, blk.norm2)
        if self.gate_up is None:
            return x + blk.ffn(h)
        g, u = linear(h, *self.gate_up).chunk(2, dim=-1)                      # (B, 1, F) each
        down = blk.down
        a = blk.act(g).mul_(u)
        return linear_add(x, a, down.weight) if down.bias is None else x + linear(a, down.weight, down.bias)


def one_token(block) -> Optional[OneToken]:
    """The one-token step of `block` (a TransformerBlock or GQA_MoE_Layer) when it covers it (module docstring). It
    holds the packed buffers of the time it is made (steps run without grad): loading weights in place keeps them,
    a model moved or re-packed (`.to`) needs a new step, as it needs a new DecodeSession."""
    with torch.no_grad():
        return _one_token(block)


def _one_token(block) -> Optional[OneToken]:
    if not isinstance(block, TransformerBlock) or (type(block).forward, type(block)._attention) != (TransformerBlock.forward,
                                                                   TransformerBlock._attention):
        return None
    p = block.p
    if (block.kind != "full_attention" or not p.causal or block.window is not None
            or block.norm1 is None or block.norm2 is None or block.post_attn_norm is not None
            or block.post_mlp_norm is not None or block.ls1 is not None or block.q_norm is not None
            or block.softcap is not None or p.rope not in ("1d", "none") or block.rd != block.hd):
        return None
    if block.qkv is not None:
        qkv = (block.qkv.weight, block.qkv.bias)
    else:
        g = block._fused("qkv")
        if g is None:
            return None
        qkv = (g.wt, g.bias)
    gate_up = None
    if not getattr(block, "moe", False):
        if block.gate_up_fused is not None:
            gate_up = (block.gate_up_fused.weight, block.gate_up_fused.bias)
        elif block.gate is not None:
            g = block._fused("gate_up")
            gate_up = (g.wt, g.bias) if g is not None else None
    return OneToken(block, qkv, gate_up)
