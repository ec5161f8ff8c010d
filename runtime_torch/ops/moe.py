"""Torch implementation of GQA_MoE_Layer (compiler/ops/moe.py): TransformerBlock with a mixture-of-experts FFN.

Routing as transformers 5.x Qwen2-MoE / Mixtral: softmax over the E router logits in float32, the top_k largest,
renormalised to sum 1 if norm_topk_prob, cast to the compute dtype. Dispatch without a per-token loop: the
(token, choice) pairs are sorted by expert, each expert's group goes through one matrix product (one F.linear per
expert that received tokens on the CPU; torch._grouped_mm over all groups at once elsewhere, where its 16-byte
alignment holds), and the weighted results are summed back per token (index_add). Decoding (at most FEW pairs)
runs each pair's expert in place (`experts_few`). Checkpoints that store one tensor per expert are stacked into
that layout by the loader's Merge rules (compiler/importers/keymaps.py).
Shapes: N tokens (B*T), D width, E experts, k = top_k, F expert width, S shared-expert width.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..kernels import dense, linear
from ..registry import implements
from .transformer import TransformerBlock


def route(h, router_w, top_k: int, renorm: bool):
    """(weights (N, k) in h's dtype, expert ids (N, k)) of tokens h (N, D)."""
    probs = torch.softmax(F.linear(h, router_w), dim=-1, dtype=torch.float)    # (N, E)
    w, idx = torch.topk(probs, top_k, dim=-1)                                  # (N, k)
    if renorm:
        w = w / w.sum(dim=-1, keepdim=True)
    return w.to(h.dtype), idx


def route_group(h, router_w, bias, top_k: int, n_group: int, topk_group: int, renorm: bool, scale: float):
    """DeepSeek-V3's group-limited sigmoid routing (compiler/ops/moe.py), in float32 as transformers:
    (weights (N, k) in h's dtype, expert ids (N, k)) of tokens h (N, D); bias (E,) the score correction."""
    N, E = h.shape[0], router_w.shape[0]
    scores = F.linear(h.float(), router_w.float()).sigmoid()                    # (N, E)
    choice = scores + bias.float()
    groups = choice.view(N, n_group, E // n_group).topk(2, dim=-1)[0].sum(dim=-1)   # (N, G)
    keep = torch.zeros_like(groups).scatter_(1, torch.topk(groups, topk_group, dim=-1, sorted=False)[1], 1.0)
    keep = keep.unsqueeze(-1).expand(N, n_group, E // n_group).reshape(N, E)   # (N, E)
    idx = torch.topk(choice.masked_fill(keep == 0, float("-inf")), top_k, dim=-1, sorted=False)[1]   # (N, k)
    w = scores.gather(1, idx)
    if renorm:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return (w * scale).to(h.dtype), idx


FEW = 8    # at most this many (token, choice) pairs (decoding) run `experts_few`


def _aligned(*ts) -> bool:
    return all(t.shape[-1] * t.element_size() % 16 == 0 for t in ts)


def experts(h, idx, w, gate_up, down, act, grouped: Optional[bool] = None):
    """sum_k w[:, k] * down_e(act(gate_e h) * up_e h) with e = idx[:, k]; h (N, D), gate_up (E, 2F, D), down (E, D, F).
    The (token, choice) pairs sorted by expert, each expert's rows one contiguous slice: one F.linear per expert
    that received tokens, or one torch._grouped_mm over all (`grouped`; default: off the CPU, where its per-group
    products were slower than MKL's: 52-60 ms against 45-54 for the loop, 16 experts top-2, 1024 tokens, 2 threads);
    the weighted rows are summed back per token by index_add. At most FEW pairs: `experts_few`."""
    if torch.compiler.is_exporting():      # torch.export (ONNX): no data-dependent group sizes
        return experts_dense(h, idx, w, gate_up, down, act)
    N, k = idx.shape
    if N * k <= FEW:
        return experts_few(h, idx, w, gate_up, down, act)
    E, F2, _ = gate_up.shape
    flat = idx.reshape(-1)                                                     # (N*k,)
    order = torch.argsort(flat, stable=True)                                   # pairs grouped by expert
    tok = order // k                                                           # (N*k,) token of each sorted pair
    xs = h.index_select(0, tok)                                                # (N*k, D)
    counts = torch.bincount(flat, minlength=E)                                 # (E,)
    if grouped is None:
        grouped = not h.is_cpu
    if grouped and hasattr(torch, "_grouped_mm") and _aligned(h, down) and (F2 // 2) * h.element_size() % 16 == 0:
        offs = torch.cumsum(counts, 0).to(torch.int32)
        gu = torch._grouped_mm(xs, gate_up.transpose(1, 2), offs=offs)         # (N*k, 2F)
        g, u = gu.chunk(2, dim=-1)
        ys = torch._grouped_mm(act(g) * u, down.transpose(1, 2), offs=offs)    # (N*k, D)
    else:
        ys = xs.new_empty(xs.shape[0], down.shape[1])
        start = 0
        for e, c in enumerate(counts.tolist()):
            if c:
                g, u = F.linear(xs[start:start + c], gate_up[e]).chunk(2, dim=-1)   # (c, F) each
                ys[start:start + c] = F.linear(act(g) * u, down[e])              # (c, D)
                start += c
    ys = ys * w.reshape(-1)[order, None]                                       # (N*k, D) weighted
    return h.new_zeros(h.shape[0], ys.shape[1]).index_add_(0, tok, ys)        # (N, D)


def experts_few(h, idx, w, gate_up, down, act):
    """`experts` for a few (token, choice) pairs (decoding): each pair runs the products of its expert's weights,
    read in place (views of the chosen experts only; one row is a matrix-vector product, kernels.linear), with no
    sorting, gathering or scattering."""
    rows = []
    for t, es in enumerate(idx.tolist()):
        x = h[t]                                                               # (D,)
        acc = None
        for j, e in enumerate(es):
            g, u = linear(x, gate_up[e]).chunk(2)                              # (F,) each
            y = linear(act(g) * u, down[e]) * w[t, j]                          # (D,)
            acc = y if acc is None else acc + y
        rows.append(acc)
    return torch.stack(rows)                                                   # (N, D)


def experts_dense(h, idx, w, gate_up, down, act):
    """The same sum with every expert run on every token, weighted by its routing weight (0 where not chosen):
    static shapes for torch.export, E / k times the expert FLOPs."""
    weight = torch.zeros(h.shape[0], gate_up.shape[0], dtype=w.dtype, device=h.device).scatter(1, idx, w)   # (N, E)
    g, u = torch.einsum("nd,efd->nef", h, gate_up).chunk(2, dim=-1)           # (N, E, F) each
    ys = torch.einsum("nef,edf->ned", act(g) * u, down)                        # (N, E, D)
    return (ys * weight[..., None]).sum(dim=1)                                 # (N, D)


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
        h = h.reshape(-1, shape[-1])                                           # (N, D)
        if self.grouped:
            w, idx = route_group(h, self.router.weight, self.router.e_score_correction_bias, self.top_k,
                                 *self.grouped[:2], self.renorm, self.grouped[2])
        else:
            w, idx = route(h, self.router.weight, self.top_k, self.renorm)
        y = experts(h, idx, w, getattr(*self.experts_gate_up), getattr(*self.experts_down), self.act)
        if self.shared_gate is not None:
            s = dense(self.act(dense(h, self.shared_gate)) * dense(h, self.shared_up), self.shared_down)
            y = y + (s if self.shared_router is None else torch.sigmoid(dense(h, self.shared_router)) * s)
        return y.view(shape)
