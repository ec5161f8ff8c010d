"""MLX implementation of TransformerBlock (compiler/ops/transformer.py); mirror of `runtime_torch/ops/transformer.py`.

    x = x + ls1 * post_attn_norm(mixer(norm1(x)))       mixer: attention (full / sliding) or LFM2 short convolution
    x = x + ls2 * post_mlp_norm(ffn(norm2(x)))          ffn: plain or gated MLP (GQA_MoE_Layer: experts, moe.py)
The reference is the torch runtime (itself transformers 5.x): llama, gemma3 (offset RMSNorm, q/k norm, sandwich
norms, sliding mask `q - W < k <= q`, local RoPE base, query_pre_attn_scalar), gemma2 (soft-capped scores: an
explicit softmax, as the fused attention cannot cap), phi3 (fused q|k|v and gate|up), olmo2 (post norms only, q/k
norm over the whole projection), smollm3 (NoPE layers), lfm2 (ShortConv), siglip, dinov2 (LayerScale), dinov3 (2-D
RoPE on patch tokens). 1-D RoPE: kernels.Rope's rows (runtime_common/rope.py's frequencies, every scaling type),
rotate-half on the first rope_dim features. The MLX kernels used where they compute the same thing:
`mx.fast.rms_norm` / `layer_norm`, `mx.fast.scaled_dot_product_attention` (GQA without repeating K/V; its "causal" mask is lower-right aligned).

Parameters are built from the op's declaration (`node.py`), at the names of the block's naming family; role
handles (`self.q`, `self.norm1`, ...) are plain attributes outside MLX's parameter tree, so each array appears once,
at its declared name. Every derived value (scale, window, RoPE dims and base, activation) is read from the resolved
params.

Decoding: `__call__(x, cache=None)`. A `LayerCache` (runtime_mlx/cache.py) holds `seen` tokens (the RoPE position of
x's first token) and K, V (B, kv, S, hs) after q/k norm and RoPE (sliding layers keep the last window - 1 positions)
or, for conv layers, the last kernel - 1 inputs of the convolution, channels-last `state["conv"]` (B, K-1, D): the
torch runtime's (B, D, K-1) transposed, the same bytes. After `pack()` (runtime_mlx/pack.py, done by `generate`) q|k|v
and gate|up run as one product each while their parameters are the packed views, and one new token over a cache
takes `_attend_one` (q|k in one reshape and one RoPE, no transposes).
Shape vocabulary: B batch, T tokens of this call, S cached + new keys, D width, H heads, kv key/value heads,
hs head size, F MLP width, K conv kernel.
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

from ..cache import LayerCache
from ..kernels import ACT, Rope, apply_rope, attend, check_scores, dense, grid_angles, norm
from ..node import Node
from ..registry import implements

@implements("TransformerBlock")
class TransformerBlock(Node):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)
        self.hold(p)                        # norms, projections, LayerScale, FFN: the op's `handles`
        self.keep(p=p, rot=Rope(p.theta, p.rope_dims, p.rope_scaling), act=ACT[p.act])
        self.kind, self.causal, self.window = p.layer_type, p.causal, p.window
        self.H, self.KV, self.hd, self.rd = p.num_heads, p.kv, p.head_dim, p.rope_dims
        self.keep(groups={})                # "qkv", "gate_up": runtime_mlx.pack.Packed, set by pack()
        self.qk_whole, self.softcap = p.qk_norm_scope == "all", p.attn_softcap
        if p.rope == "2d":
            ang = grid_angles(p.rope_grid, self.rd, p.theta)                              # (h*w, rd)
            self.keep(cos=mx.cos(ang), sin=mx.sin(ang))

    def norm(self, x, m):
        return norm(x, m, self.p.norm, self.p.norm_eps, self.p.norm_offset)

    def pack(self) -> None:
        """Share one buffer among q | k | v and among gate | up (runtime_mlx/pack.py), kept while usable."""
        from ..pack import group
        parts = self.packable()
        keep = {k: g for k, g in self.groups.items() if k in parts and g.usable(parts[k])}
        made = {k: group(mods) for k, mods in parts.items() if k not in keep}
        self.keep(groups={**keep, **{k: g for k, g in made.items() if g is not None}})

    def unpack(self) -> None:
        self.keep(groups={})

    def packable(self) -> dict:
        """The projections that read one input, by group: q | k | v, gate | up (the current handles)."""
        parts = {}
        if self.kind != "conv" and self.qkv is None:
            parts["qkv"] = [self.q, self.k, self.v]
        if getattr(self, "gate", None) is not None:
            parts["gate_up"] = [self.gate, self.up]
        return parts

    def fused(self, key: str):
        """The packed group `key` when its one product may run (Packed.usable), else None."""
        g = self.groups.get(key)
        return g if g is not None and g.usable(self.packable()[key]) else None

    def norm_qk(self, x, m):
        return norm(x, m, "rmsnorm", self.p.norm_eps, self.p.norm_offset)

    # --- forward ---------------------------------------------------------------------------------------------------
    def __call__(self, x, cache: Optional[LayerCache] = None):
        h = self.norm(x, self.norm1) if self.norm1 is not None else x
        y = self._conv(h, cache) if self.kind == "conv" else self._attention(h, cache)
        if cache is not None:
            cache.seen += x.shape[1]
        if self.post_attn_norm is not None:
            y = self.norm(y, self.post_attn_norm)
        if self.ls1 is not None:
            m, k = self.ls1
            y = y * m[k]
        x = x + y
        y = self.ffn(self.norm(x, self.norm2) if self.norm2 is not None else x)
        if self.post_mlp_norm is not None:
            y = self.norm(y, self.post_mlp_norm)
        if self.ls2 is not None:
            m, k = self.ls2
            y = y * m[k]
        return x + y

    def ffn(self, h):
        if self.gate_up_fused is not None:
            g, u = mx.split(dense(h, self.gate_up_fused), 2, axis=-1)       # (B, T, F) each
            return dense(self.act(g) * u, self.down)                         # (B, T, D)
        if self.gate is not None:
            fused = self.fused("gate_up")
            g, u = fused(h) if fused is not None else (dense(h, self.gate), dense(h, self.up))   # (B, T, F) each
            return dense(self.act(g) * u, self.down)                         # (B, T, D)
        return dense(self.act(dense(h, self.fc1)), self.fc2)

    def _attention(self, h, cache):
        B, T, _ = h.shape
        fused = self.fused("qkv")
        if (fused is not None and T == 1 and cache is not None and self.q_norm is None and self.p.rope == "1d"
                and self.p.rope_rescale_past is None and self.rd == self.hd and self.softcap is None):
            return self._attend_one(h, cache, fused)
        if self.qkv is not None:
            qd, kd = self.H * self.hd, self.KV * self.hd
            q, k, v = mx.split(dense(h, self.qkv), [qd, qd + kd], axis=-1)
        elif fused is not None:
            q, k, v = fused(h)                                               # (B, T, H hs), (B, T, kv hs) x 2
        else:
            q, k, v = dense(h, self.q), dense(h, self.k), dense(h, self.v)
        if self.q_norm is not None and self.qk_whole:
            q, k = self.norm_qk(q, self.q_norm), self.norm_qk(k, self.k_norm)   # (B, T, H hs), (B, T, kv hs)
        q = q.reshape(B, T, self.H, self.hd)                                 # (B, T, H, hs)
        k = k.reshape(B, T, self.KV, self.hd)                                # (B, T, kv, hs)
        v = v.reshape(B, T, self.KV, self.hd).transpose(0, 2, 1, 3)          # (B, kv, T, hs)
        if self.q_norm is not None and not self.qk_whole:
            q, k = self.norm_qk(q, self.q_norm), self.norm_qk(k, self.k_norm)
        q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)              # (B, H, T, hs), (B, kv, T, hs)
        pos = cache.seen if cache is not None else 0
        if self.p.rope == "1d":
            n = self.p.rope_rescale_past          # nanoVLM: past n positions, the call's positions / ((pos + T) / n)
            div = (pos + T) / n if n is not None and pos + T > n else None
            q, k = self.rot.apply(q, pos, div), self.rot.apply(k, pos, div)
        elif self.p.rope == "2d":
            n0 = self.p.rope_prefix
            cos, sin = self.cos.astype(h.dtype), self.sin.astype(h.dtype)
            q = mx.concatenate((q[:, :, :n0], apply_rope(q[:, :, n0:], cos, sin, self.rd)), axis=2)
            k = mx.concatenate((k[:, :, :n0], apply_rope(k[:, :, n0:], cos, sin, self.rd)), axis=2)
        n_cached = 0
        if cache is not None:
            k, v, n_cached = cache.extend(k, v, self.window)                 # (B, kv, S, hs)
        mask = self._mask(T, k.shape[2], pos, n_cached)
        if self.softcap is not None:
            y = self._attend_capped(q, k, v, mask, pos, n_cached)
        else:
            y = attend(q, k, v, scale=self.p.scale, mask=mask)   # (B, H, T, hs)
        return dense(y.transpose(0, 2, 1, 3).reshape(B, T, self.H * self.hd), self.o)   # (B, T, D)

    def _attend_one(self, h, cache, fused):
        """The attention above for one new token per row over a cache, from the packed q|k|v product, in fewer ops
        (decoding runs them per token and layer): with T = 1, (B, T, heads, hs) and (B, heads, T, hs) are one memory
        layout, so q|k take one reshape and one RoPE, and no transposes are needed."""
        B, H, KV, hd = h.shape[0], self.H, self.KV, self.hd
        qkv = h @ fused.w.T                                                  # (B, 1, (H + 2kv) hs)
        if fused.bias is not None:
            qkv = qkv + fused.bias
        qk = self.rot.apply(qkv[..., :(H + KV) * hd].reshape(B, H + KV, 1, hd), cache.seen)   # (B, H + kv, 1, hs)
        k, v, n_cached = cache.extend(qk[:, H:], qkv[..., (H + KV) * hd:].reshape(B, KV, 1, hd),
                                      self.window)                           # (B, kv, S, hs)
        mask = self._mask(1, k.shape[2], cache.seen, n_cached)
        y = attend(qk[:, :H], k, v, scale=self.p.scale, mask=mask)   # (B, H, 1, hs)
        return dense(y.reshape(B, 1, H * hd), self.o)                        # (B, 1, D)

    def _attend_capped(self, q, k, v, mask, pos: int, n_cached: int):
        """Soft-capped attention, transformers' eager path: scores x scale, cap * tanh(scores / cap), masked,
        softmax in float32. q (B, H, T, hs); k, v (B, kv, S, hs); mask as `_mask` gives it."""
        T, S, rep = q.shape[2], k.shape[2], self.H // self.KV
        check_scores(q, k)
        if rep > 1:
            k, v = mx.repeat(k, rep, axis=1), mx.repeat(v, rep, axis=1)    # (B, H, S, hs)
        s = (q @ k.transpose(0, 1, 3, 2)) * self.p.scale                     # (B, H, T, S)
        s = mx.tanh(s / self.softcap) * self.softcap
        if isinstance(mask, str):                                            # "causal", lower-right aligned
            qp = mx.arange(pos, pos + T)[:, None]
            mask = mx.arange(pos - n_cached, pos - n_cached + S)[None, :] <= qp
        if mask is not None:
            s = mx.where(mask, s, mx.finfo(s.dtype).min)
        return mx.softmax(s.astype(mx.float32), axis=-1).astype(q.dtype) @ v   # (B, H, T, hs)

    def _mask(self, T: int, S: int, pos: int, n_cached: int):
        """None, "causal" (lower-right aligned) or a boolean (T, S) mask, True = attend, for T queries at positions
        pos.. over S keys at positions pos - n_cached.."""
        W = self.window
        if W is None and not self.causal:
            return None
        if self.causal and (W is None or W >= S):
            return "causal" if T > 1 else None
        q = mx.arange(pos, pos + T)[:, None]                                 # (T, 1)
        k = mx.arange(pos - n_cached, pos - n_cached + S)[None, :]           # (1, S)
        if self.causal:
            return (k <= q) & (k > q - W)
        return mx.abs(q - k) < W

    def _conv(self, h, cache):
        """LFM2 ShortConv: in_proj -> B, C, x; B*x; depthwise causal conv (no bias by default); C*; out_proj."""
        K = self.p.conv_kernel
        Bg, Cg, xg = mx.split(dense(h, self.conv_in), 3, axis=-1)           # 3 x (B, T, D)
        u = Bg * xg                                                          # (B, T, D)
        past = cache.state.get("conv") if cache is not None else None
        if past is None:
            past = mx.zeros((u.shape[0], K - 1, u.shape[2]), dtype=u.dtype)  # (B, K-1, D)
        full = mx.concatenate((past, u), axis=1)                             # (B, K-1+T, D)
        if cache is not None:
            cache.state["conv"] = full[:, full.shape[1] - (K - 1):]
        y = mx.conv1d(full, self.dwconv.weight, groups=u.shape[2])             # (B, T, D)
        if "bias" in self.dwconv:
            y = y + self.dwconv.bias
        return dense(Cg * y, self.conv_out)                                  # (B, T, D)
