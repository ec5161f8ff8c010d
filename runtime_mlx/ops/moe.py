"""MLX implementation of GQA_MoE_Layer (compiler/ops/moe.py); mirror of `runtime_torch/ops/moe.py`.

Routing as transformers 5.x Qwen2-MoE / Mixtral: softmax over the E router logits in float32, the top_k largest,
renormalised to sum 1 if norm_topk_prob, cast to the compute dtype. Dispatch with `mx.gather_mm` (as mlx-lm's
SwitchGLU): each (token, choice) pair multiplies by its expert's matrices without materialising them per token;
pairs are sorted by expert first when there are many (contiguous expert runs), then restored. `gather_mm` runs
float32 only on the CPU; other dtypes take one matrix product per expert that received tokens (the group sizes are
read back, as the torch runtime's fallback does).
Shapes: N tokens (B*T), D width, E experts, k = top_k, F expert width, S shared-expert width.
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..kernels import ACT, dense
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
    def init_ffn(self, p, names):
        shared = p.shared_expert_dim is not None          # 0: a zero-width expert and its gate, as transformers
        self.keep(act=ACT[p.act], router=self.at(names["router"]), gate_up=self.ref(names["experts_gate_up"]),
                  down_w=self.ref(names["experts_down"]),
                  shared=tuple(self.at(names[r]) for r in ("shared_gate", "shared_up", "shared_down"))
                  if shared else None, shared_router=self.at(names["shared_router"]) if shared else None)
        self.top_k, self.renorm = p.top_k, p.norm_topk_prob

    def ffn(self, h):
        shape = h.shape
        h = h.reshape(-1, shape[-1])                                              # (N, D)
        w, idx = route(h, self.router.weight, self.top_k, self.renorm)
        (gm, gk), (dm, dk) = self.gate_up, self.down_w
        y = experts(h, idx, w, gm[gk], dm[dk], self.act)
        if self.shared is not None:
            g, u, d = self.shared
            y = y + mx.sigmoid(dense(h, self.shared_router)) * dense(self.act(dense(h, g)) * dense(h, u), d)
        return y.reshape(shape)
