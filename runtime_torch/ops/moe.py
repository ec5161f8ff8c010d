"""Torch implementation of GQA_MoE_Layer (compiler/ops/moe.py): TransformerBlock with a mixture-of-experts FFN.

Routing as transformers 5.x Qwen2-MoE / Mixtral: softmax over the E router logits in float32, the top_k largest,
renormalised to sum 1 if norm_topk_prob, cast to the compute dtype. Dispatch without a per-token loop: the
(token, choice) pairs are sorted by expert, each expert's group goes through one matrix product (torch._grouped_mm
over all groups at once where its 16-byte alignment holds, else one F.linear per expert that received tokens), and
the weighted results are summed back per token over its top_k choices. `merge_experts` stacks checkpoints that
store one tensor per expert (the hub's Mixtral and Qwen2-MoE files) into that layout.
Shapes: N tokens (B*T), D width, E experts, k = top_k, F expert width, S shared-expert width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import dense
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


def _aligned(*ts) -> bool:
    return all(t.shape[-1] * t.element_size() % 16 == 0 for t in ts)


def experts(h, idx, w, gate_up, down, act, grouped: bool = True):
    """sum_k w[:, k] * down_e(act(gate_e h) * up_e h) with e = idx[:, k]; h (N, D), gate_up (E, 2F, D), down (E, D, F)."""
    if torch.compiler.is_exporting():      # torch.export (ONNX): no data-dependent group sizes
        return experts_dense(h, idx, w, gate_up, down, act)
    N, k = idx.shape
    E, F2, _ = gate_up.shape
    flat = idx.reshape(-1)                                                     # (N*k,)
    order = torch.argsort(flat, stable=True)                                   # pairs grouped by expert
    xs = h[order // k]                                                         # (N*k, D)
    counts = torch.bincount(flat, minlength=E)                                 # (E,)
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
    out = torch.empty_like(ys)
    out[order] = ys                                                            # back to (token, choice) order
    return (out.view(N, k, -1) * w[..., None]).sum(dim=1)                      # (N, D)


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
