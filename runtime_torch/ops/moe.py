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

import re
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..kernels import ACT, dense
from ..registry import implements
from .transformer import TransformerBlock


def route(h, router_w, top_k: int, renorm: bool):
    """(weights (N, k) in h's dtype, expert ids (N, k)) of tokens h (N, D)."""
    probs = torch.softmax(F.linear(h, router_w), dim=-1, dtype=torch.float)    # (N, E)
    w, idx = torch.topk(probs, top_k, dim=-1)                                  # (N, k)
    if renorm:
        w = w / w.sum(dim=-1, keepdim=True)
    return w.to(h.dtype), idx


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


def merge_experts(tensors: Mapping[str, torch.Tensor], merges: Sequence[tuple[str, str, tuple[str, ...]]]) \
        -> dict[str, torch.Tensor]:
    """Stack a checkpoint's per-expert tensors into (E, parts x out, in) as `merges` says (for transformers
    checkpoints: compiler.importers.hf_expert_merges(model_type)). A merge is (regex with groups prefix, expert
    index, part; target, expanded from the match; parts in concatenation order). Other names pass unchanged, so
    merging twice changes nothing. Raises ValueError when an expert or a part is missing."""
    rules = [(re.compile(pat), target, parts) for pat, target, parts in merges]
    out: dict[str, torch.Tensor] = {}
    groups: dict[tuple[str, tuple[str, ...]], dict[str, dict[int, torch.Tensor]]] = {}
    for name, t in tensors.items():
        for pat, target, parts in rules:
            m = pat.match(name)
            if m:
                groups.setdefault((m.expand(target), parts), {}).setdefault(m.group(3), {})[int(m.group(2))] = t
                break
        else:
            out[name] = t
    for (target, parts), by_part in groups.items():
        n = 1 + max(e for experts_ in by_part.values() for e in experts_)
        for part in parts:
            missing = sorted(set(range(n)) - set(by_part.get(part, {})))
            if missing:
                raise ValueError(f"{target}: part {part!r} lacks experts {missing} (of {n})")
        out[target] = torch.cat([torch.stack([by_part[part][e] for e in range(n)]) for part in parts], dim=1)
    return out


@implements("GQA_MoE_Layer")
class GQAMoELayer(TransformerBlock):
    def init_ffn(self, p, names):
        shared = p.shared_expert_dim is not None          # 0: a zero-width expert and its gate, as transformers
        self.keep(act=ACT[p.act], gate=None, router=self.at(names["router"]),     # no dense gate|up to pack
                  gate_up=self.ref(names["experts_gate_up"]), down=self.ref(names["experts_down"]),
                  shared=tuple(self.at(names[r]) for r in ("shared_gate", "shared_up", "shared_down"))
                  if shared else None, shared_router=self.at(names["shared_router"]) if shared else None)
        self.top_k, self.renorm = p.top_k, p.norm_topk_prob

    def ffn(self, h):
        shape = h.shape
        h = h.reshape(-1, shape[-1])                                           # (N, D)
        w, idx = route(h, self.router.weight, self.top_k, self.renorm)
        y = experts(h, idx, w, getattr(*self.gate_up), getattr(*self.down), self.act)
        if self.shared is not None:
            g, u, d = self.shared
            y = y + torch.sigmoid(dense(h, self.shared_router)) * dense(self.act(dense(h, g)) * dense(h, u), d)
        return y.view(shape)
