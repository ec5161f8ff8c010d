"""Torch implementation of TransformerBlock (compiler/ops/transformer.py), every variant its params allow.

    x = x + ls1 * post_attn_norm(mixer(norm1(x)))       mixer: attention (full / sliding) or LFM2 short convolution
    x = x + ls2 * post_mlp_norm(ffn(norm2(x)))          ffn: plain or gated MLP (GQA_MoE_Layer: experts, moe.py)
(post norms only with `post_norms`, LayerScale only with `layer_scale`). The reference behaviour, bit for bit
where the summation order allows, is transformers 5.x: llama (RoPE, GQA), gemma3 (offset RMSNorm, q/k norm, sandwich
norms, sliding mask `q - W < k <= q`, local RoPE base, query_pre_attn_scalar), gemma2 (attention logit soft-capping:
the eager path, as SDPA cannot cap), phi3 (fused q|k|v and gate|up), olmo2 (post norms only, q/k norm over the
whole projection), smollm3 (NoPE layers), lfm2 (ShortConv), siglip, dinov2 (LayerScale), dinov3_vit (2-D RoPE on
patch tokens). Rotary frequencies of every scaling type come from runtime_common/rope.py (kernels.Rope).

Parameters are built from the op's declaration (`node.py`), at the names of the block's naming family
(compiler/ops/naming.py); this module keeps handles to them and holds forward code only. Every derived value (score
scale, window, RoPE dims and base, activation) is read from the resolved params. Attention runs through
F.scaled_dot_product_attention.

Decoding: `forward(x, cache=None)`. A `LayerCache` (runtime_torch/cache.py, one per layer) holds what the layer
needs to continue a sequence, as the op declares it (`decode_state`): `seen` tokens so far (the RoPE position of
x's first token), and K, V (B, kv, S, hs) after q/k norm and RoPE (sliding layers keep the last window - 1
positions, all a later query can see) or, for conv layers, the last kernel - 1 inputs of the convolution
`state["conv"]` (B, D, K-1). A cache with a `given` (compiler/emit/onnx_decode.py, the ONNX decode graph) supplies
the RoPE rows of explicit positions, the past K/V (`extend` returns past + new) and the mask (padding) instead.
Shape vocabulary: B batch, T tokens of this call, S cached + new keys, D width, H heads, kv key/value heads,
hs head size, F MLP width.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..cache import LayerCache
from ..kernels import ACT, Rope, RopeTable, apply_rope, dense, grid_angles, linear, norm, rope_tables
from ..node import Node
from ..registry import implements

@implements("TransformerBlock")
class TransformerBlock(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.hold(p)                        # norms, projections, LayerScale, FFN: the op's `handles`
        self.p, self.kind, self.causal, self.window = p, p.layer_type, p.causal, p.window
        self.H, self.KV, self.hd, self.rd = p.num_heads, p.kv, p.head_dim, p.rope_dims
        self.grid = p.rope_grid
        self.rot = Rope(p.theta, self.rd, p.rope_scaling)       # 1d rope: frequencies, scaling, the tables' key
        self.qk_whole = p.qk_norm_scope == "all"                 # OLMo-2: q/k norm over the whole projection
        self.softcap = p.attn_softcap
        self.act = ACT[p.act]
        self._groups: dict = {}            # "qkv", "gate_up": runtime_torch.pack.Packed, set by pack()

    def norm(self, x, m):
        return norm(x, m, self.p.norm, self.p.norm_eps, self.p.norm_offset)

    def pack(self) -> list:
        """Share one column-major buffer among q | k | v and among gate | up (runtime_torch/pack.py); returns the
        parameters placed."""
        from ..pack import group
        self._groups = {}
        if self.kind != "conv" and self.qkv is None:
            self._groups["qkv"] = group([self.q, self.k, self.v])
        if self.gate is not None:
            self._groups["gate_up"] = group([self.gate, self.up])
        self._groups = {k: g for k, g in self._groups.items() if g is not None}
        return [t for g in self._groups.values() for m in g.mods for t in (m.weight, m.bias) if t is not None]

    def _fused(self, key: str):
        """The packed group `key` when its fused product may run (Packed.usable), else None."""
        g = self._groups.get(key) if self._groups else None
        return g if g is not None and g.usable() else None

    # --- forward ---------------------------------------------------------------------------------------------------
    def forward(self, x, cache: Optional[LayerCache] = None):
        h = self.norm(x, self.norm1) if self.norm1 is not None else x
        y = self._conv(h, cache) if self.kind == "conv" else self._attention(h, cache)
        if cache is not None:
            cache.seen += x.shape[1]
        if self.post_attn_norm is not None:
            y = self.norm(y, self.post_attn_norm)
        if self.ls1 is not None:
            y = y * getattr(*self.ls1)
        x = x + y
        y = self.ffn(self.norm(x, self.norm2) if self.norm2 is not None else x)
        if self.post_mlp_norm is not None:
            y = self.norm(y, self.post_mlp_norm)
        if self.ls2 is not None:
            y = y * getattr(*self.ls2)
        return x + y

    def ffn(self, h):
        if self.gate_up_fused is not None:
            g, u = dense(h, self.gate_up_fused).chunk(2, dim=-1)             # (B, T, F) each
            return dense(self.act(g) * u, self.down)                         # (B, T, D)
        if self.gate is not None:
            fused = self._fused("gate_up")
            g, u = fused(h) if fused is not None else (dense(h, self.gate), dense(h, self.up))   # (B, T, F) each
            return dense(self.act(g) * u, self.down)                         # (B, T, D)
        return dense(self.act(dense(h, self.fc1)), self.fc2)

    def _attention(self, h, cache):
        B, T, _ = h.shape
        fused = self._fused("qkv")
        given = getattr(cache, "given", None)     # positions, past K/V, mask as inputs (compiler/emit/onnx_decode)
        if (fused is not None and T == 1 and given is None and cache is not None and self.q_norm is None
                and self.p.rope != "2d"
                and self.rd == self.hd and self.softcap is None):
            return self._attend_one(h, cache, fused)
        if self.qkv is not None:
            q, k, v = dense(h, self.qkv).split((self.H * self.hd, self.KV * self.hd, self.KV * self.hd), dim=-1)
        elif fused is not None:
            q, k, v = fused(h)
        else:
            q, k, v = dense(h, self.q), dense(h, self.k), dense(h, self.v)
        if self.q_norm is not None and self.qk_whole:
            q, k = self.norm_qk(q, self.q_norm), self.norm_qk(k, self.k_norm)   # (B, T, H hs), (B, T, kv hs)
        q = q.view(B, T, self.H, self.hd)                                    # (B, T, H, hs)
        k = k.view(B, T, self.KV, self.hd)                                   # (B, T, kv, hs)
        v = v.view(B, T, self.KV, self.hd).transpose(1, 2)                   # (B, kv, T, hs)
        if self.q_norm is not None and not self.qk_whole:
            q, k = self.norm_qk(q, self.q_norm), self.norm_qk(k, self.k_norm)
        q, k = q.transpose(1, 2), k.transpose(1, 2)                          # (B, H, T, hs), (B, kv, T, hs)
        pos = cache.seen if cache is not None else 0
        rope = self.p.rope
        if rope == "1d":
            cos, sin = given.rope(self.rot, h) if given is not None else self._rope_rows(pos, T, h)  # (.., T, rd)
            q, k = apply_rope(q, cos, sin, self.rd), apply_rope(k, cos, sin, self.rd)
        elif rope == "2d":
            cos, sin = rope_tables(grid_angles(self.grid, self.rd, self.p.theta).to(h.device), h.dtype)  # (h*w, rd)
            n0 = self.p.rope_prefix
            q = torch.cat((q[:, :, :n0], apply_rope(q[:, :, n0:], cos, sin, self.rd)), dim=2)
            k = torch.cat((k[:, :, :n0], apply_rope(k[:, :, n0:], cos, sin, self.rd)), dim=2)
        n_cached = 0
        if cache is not None:
            n_cached = cache.n
            k, v = cache.extend(k, v, self.window)                           # (B, kv, S, hs)
        if self.softcap is not None:
            keep = (given.keep(self.window) if given is not None else
                    self._mask(T, k.shape[2], pos, n_cached, h.device, explicit=True)[0])
            y = self._attend_capped(q, k, v, keep)
        else:
            mask, is_causal = ((given.keep(self.window), False) if given is not None else
                               self._mask(T, k.shape[2], pos, n_cached, h.device))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.p.scale,
                                               enable_gqa=self.KV != self.H)     # (B, H, T, hs)
        return dense(y.transpose(1, 2).reshape(B, T, self.H * self.hd), self.o)   # (B, T, D)

    def _rope_rows(self, pos: int, T: int, h):
        """cos, sin (T, rd) of positions pos..pos+T-1; past `rope_rescale_past` (nanoVLM's RotaryEmbedding) the
        positions of the whole call are divided by (pos + T) / rope_rescale_past, as its frequencies are."""
        n = self.p.rope_rescale_past
        if n is not None and pos + T > n:
            t = torch.arange(pos, pos + T, device=h.device, dtype=torch.float) / ((pos + T) / n)   # (T,)
            rot = self.rot
            return RopeTable.angles(rot, rot.length(pos + T) if rot.scaling is not None else None, t, h.dtype)
        return RopeTable.rows(self.rot, pos, T, h)

    def _attend_capped(self, q, k, v, keep):
        """Attention with soft-capped scores, transformers' eager path (SDPA cannot cap): scores x scale, then
        cap * tanh(scores / cap), masked, softmax in float32. q (B, H, T, hs); k, v (B, kv, S, hs); keep (T, S)."""
        rep = self.H // self.KV
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)   # (B, H, S, hs)
        s = torch.matmul(q, k.transpose(2, 3)) * self.p.scale                # (B, H, T, S)
        s = torch.tanh(s / self.softcap) * self.softcap
        if keep is not None:
            s = s.masked_fill(~keep, torch.finfo(s.dtype).min)
        return torch.matmul(F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype), v)   # (B, H, T, hs)

    def _attend_one(self, h, cache, fused):
        """The attention below for one new token per row over a cache, from the packed q|k|v product, in fewer tensor
        ops (decoding runs them per token and layer): with T = 1, (B, T, heads, hs) and (B, heads, T, hs) are one
        memory layout, so q|k take one view and one RoPE (if any), and no transposes are needed."""
        B, H, KV, hd = h.shape[0], self.H, self.KV, self.hd
        qkv = linear(h, fused.wt, fused.bias)                                # (B, 1, (H + 2kv) hs)
        qk = qkv.narrow(-1, 0, (H + KV) * hd).view(B, H + KV, 1, hd)          # (B, H + kv, 1, hs)
        if self.p.rope == "1d":
            qk = apply_rope(qk, *self._rope_rows(cache.seen, 1, h), hd)
        n_cached = cache.n
        k, v = cache.extend(qk.narrow(1, H, KV), qkv.narrow(-1, (H + KV) * hd, KV * hd).view(B, KV, 1, hd),
                            self.window)                                     # (B, kv, S, hs)
        mask, is_causal = self._mask(1, k.shape[2], cache.seen, n_cached, h.device)
        y = F.scaled_dot_product_attention(qk.narrow(1, 0, H), k, v, attn_mask=mask, is_causal=is_causal,
                                           scale=self.p.scale, enable_gqa=KV != H)   # (B, H, 1, hs)
        return dense(y.reshape(B, 1, H * hd), self.o)                        # (B, 1, D)

    def norm_qk(self, x, m):
        return norm(x, m, "rmsnorm", self.p.norm_eps, self.p.norm_offset)

    def _mask(self, T: int, S: int, pos: int, n_cached: int, device, explicit: bool = False):
        """(mask or None, is_causal) for T queries at positions pos.. over S keys at positions pos - n_cached..;
        `explicit`: a causal mask is given as a tensor, not as is_causal."""
        W = self.window
        if W is None and not self.causal:
            return None, False
        if self.causal and (W is None or W >= S) and (T == 1 or n_cached == 0) and not explicit:
            return None, n_cached == 0     # plain causal; one query after a cache sees every key (no symbolic T test)
        q = torch.arange(pos, pos + T, device=device)[:, None]               # (T, 1)
        k = torch.arange(pos - n_cached, pos - n_cached + S, device=device)[None, :]   # (1, S)
        if self.causal:
            keep = k <= q
            if self.window is not None:
                keep = keep & (k > q - self.window)
        else:
            keep = (q - k).abs() < self.window
        return keep, False                                                   # (T, S) True = attend

    def _conv(self, h, cache):
        """LFM2 ShortConv: in_proj -> B, C, x; B*x; depthwise causal conv (no bias by default); C*; out_proj."""
        K = self.p.conv_kernel
        Bg, Cg, xg = dense(h, self.conv_in).transpose(-1, -2).chunk(3, dim=-2)   # 3 x (B, D, T)
        u = Bg * xg                                                          # (B, D, T)
        past = cache.state.get("conv") if cache is not None else None
        if past is None:
            past = u.new_zeros(u.shape[0], u.shape[1], K - 1)                # (B, D, K-1)
        full = torch.cat((past, u), dim=-1)                                  # (B, D, K-1+T)
        if cache is not None:
            cache.state["conv"] = full[..., full.shape[-1] - (K - 1):].clone()   # (B, D, K-1), own storage
        y = F.conv1d(full, self.dwconv.weight, self.dwconv.bias, groups=u.shape[1])   # (B, D, T)
        return dense((Cg * y).transpose(-1, -2), self.conv_out)              # (B, T, D)
