"""MLX implementation of GQA_MoE_Layer (compiler/ops/moe.py); mirror of `runtime_torch/ops/moe.py`.

Routing as transformers 5.x Qwen2-MoE / Mixtral: softmax over the E router logits in float32, the top_k largest,
renormalised to sum 1 if norm_topk_prob, cast to the compute dtype; DeepSeek-V3's group-limited sigmoid routing
(`route_group`) as the torch runtime's. Dense layers of a mixed stack are TransformerBlock's gated MLP. Dispatch with `mx.gather_mm` (as mlx-lm's
SwitchGLU): each (token, choice) pair multiplies by its expert's matrices without materialising them per token;
pairs are sorted by expert first when there are many (contiguous expert runs), then restored. `gather_mm` runs
float32 only on the CPU; other dtypes take one matrix product per expert that received tokens (the group sizes are
read back, as the torch runtime's fallback does).
Shapes: N tokens (B*T), D width, E experts, k = top_k, F expert width, S shared-expert width.
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..kernels import dense
from ..registry import implements
from .transformer import TransformerBlock

SORT_FROM = 64   # sort (token, choice) pairs by expert from this many on


def route(h, router_w, top_k: int, renorm: bool):
    """(weights (N, k) in h's dtype, expert ids (N, k)) of tokens h (N, D); the order of the k choices is free."""
    probs = mx.softmax((h @ router_w.T).astype(mx.float32), axis=-1)          # (N, E)
    idx = mx.argpartition(-probs, kth=top_k - 1, axis=-1)[:, :top_k]          # (N, k)
    w = mx.take_along_axis(probs, idx, axis=-1)                               # (N, k)
    if renorm:
        w = w / w.sum(axis=-1, keepdims=True)
    return w.astype(h.dtype), idx


def route_group(h, router_w, bias, top_k: int, n_group: int, topk_group: int, renorm: bool, scale: float):
    """DeepSeek-V3's group-limited sigmoid routing (compiler/ops/moe.py) in float32; as `route`'s result."""
    N, E = h.shape[0], router_w.shape[0]
    scores = mx.sigmoid(h.astype(mx.float32) @ router_w.astype(mx.float32).T)   # (N, E)
    choice = scores + bias.astype(mx.float32)
    groups = mx.topk(choice.reshape(N, n_group, E // n_group), 2, axis=-1).sum(axis=-1)   # (N, G)
    best = mx.argpartition(-groups, kth=topk_group - 1, axis=-1)[:, :topk_group]        # (N, topk_group)
    keep = (mx.arange(n_group)[None, :, None] == best[:, None, :]).any(axis=-1)          # (N, G)
    keep = mx.repeat(keep, E // n_group, axis=-1)                                        # (N, E)
    choice = mx.where(keep, choice, -mx.inf)
    idx = mx.argpartition(-choice, kth=top_k - 1, axis=-1)[:, :top_k]                    # (N, k)
    w = mx.take_along_axis(scores, idx, axis=-1)
    if renorm:
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    return (w * scale).astype(h.dtype), idx


def experts_grouped(h, idx, w, gate_up, down, act):
    """`experts` as one matrix product per expert over its tokens (any dtype)."""
    N, k = idx.shape
    flat = idx.reshape(-1)                                                    # (N*k,)
    order = mx.argsort(flat)
    counts = np.bincount(np.array(flat), minlength=gate_up.shape[0])         # group sizes (read back)
    xs = h[order // k]                                                        # (N*k, D), grouped by expert
    ys, start = [], 0
    for e, c in enumerate(counts.tolist()):
        if c:
            g, u = mx.split(xs[start:start + c] @ gate_up[e].T, 2, axis=-1)   # (c, F) each
            ys.append((act(g) * u) @ down[e].T)                               # (c, D)
            start += c
    y = mx.concatenate(ys)[mx.argsort(order)].reshape(N, k, -1)               # (N, k, D)
    return (y * w[..., None]).sum(axis=1)                                     # (N, D)


def experts(h, idx, w, gate_up, down, act):
    """sum_k w[:, k] * down_e(act(gate_e h) * up_e h) with e = idx[:, k];
    h (N, D), gate_up (E, 2F, D), down (E, D, F)."""
    if h.dtype != mx.float32:
        return experts_grouped(h, idx, w, gate_up, down, act)
    N, k = idx.shape
    x = h[:, None, None, :]                                                   # (N, 1, 1, D)
    flat = idx.reshape(-1)                                                    # (N*k,)
    do_sort = flat.size >= SORT_FROM
    if do_sort:
        order = mx.argsort(flat)
        inv = mx.argsort(order)
        x = x.reshape(N, -1)[order // k][:, None, :]                          # (N*k, 1, D), grouped by expert
        ids = flat[order]
    else:
        ids = idx
    gu = mx.gather_mm(x, gate_up.swapaxes(-1, -2), rhs_indices=ids, sorted_indices=do_sort)   # (.., 1, 2F)
    g, u = mx.split(gu, 2, axis=-1)
    y = mx.gather_mm(act(g) * u, down.swapaxes(-1, -2), rhs_indices=ids, sorted_indices=do_sort)  # (.., 1, D)
    y = y[inv].reshape(N, k, -1) if do_sort else y.reshape(N, k, -1)          # (N, k, D)
    return (y * w[..., None]).sum(axis=1)                                     # (N, D)


@implements("GQA_MoE_Layer")
class GQAMoELayer(TransformerBlock):
    def __init__(self, p, in_types):
        super().__init__(p, in_types)       # the handles: router, experts_gate_up / _down, shared_* (moe.py)
        self.moe = p.ffn_type == "moe"      # else a dense layer of a mixed stack: TransformerBlock's gated MLP
        self.top_k, self.renorm = p.top_k, p.norm_topk_prob
        self.grouped = (p.n_group, p.topk_group, p.routed_scaling_factor) if p.router == "sigmoid_group" else None

    def ffn(self, h):
        if not self.moe:
            return super().ffn(h)
        shape = h.shape
        h = h.reshape(-1, shape[-1])                                              # (N, D)
        if self.grouped:
            w, idx = route_group(h, self.router.weight, self.router.e_score_correction_bias, self.top_k,
                                 *self.grouped[:2], self.renorm, self.grouped[2])
        else:
            w, idx = route(h, self.router.weight, self.top_k, self.renorm)
        (gm, gk), (dm, dk) = self.experts_gate_up, self.experts_down
        y = experts(h, idx, w, gm[gk], dm[dk], self.act)
        if self.shared_gate is not None:
            s = dense(self.act(dense(h, self.shared_gate)) * dense(h, self.shared_up), self.shared_down)
            y = y + (s if self.shared_router is None else mx.sigmoid(dense(h, self.shared_router)) * s)
        return y.reshape(shape)
