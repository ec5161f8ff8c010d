"""Task heads on fused patch features: SegmentationHead, ClassificationHead, DetectionHead, OCRHead (Oculus).

Source: seeds/oculus-architecture.md (design only, no public code; the shapes below are the document's) and
reference/seed-systems.md. Each head is a two-layer MLP (fc1 -> GELU -> fc2, with biases) unless said otherwise:
  SegmentationHead   grid tokens (B, [prefix +] h*w, D) -> (B, h, w, classes): the MLP on every patch; prefix
                     (CLS / register) tokens are dropped. 2176 -> 256 -> 150 is 595,862 parameters.
  ClassificationHead (B, D) or tokens (B, N, D) pooled (`pool`: the CLS token, or the mean of the patch tokens)
                     -> (B, classes). 2176 -> 256 -> 1000 is 814,312 parameters (seed-systems.md).
  DetectionHead      grid tokens -> per patch `anchors` x (classes + 4): one fc2 of width A*(C+4), split into
                     outputs "logits" (B, h*w, A, C) and "boxes" (B, h*w, A, 4) (the 4 box numbers per anchor
                     follow the A*C class logits in fc2's rows).
  OCRHead            grid tokens -> a small CNN on the (B, D, h, w) map (`conv_in`: 1x1 D -> F, GELU; `conv`:
                     k x k, depthwise by default, GELU) then two linear readouts per position: "text"
                     (B, h, w, max_seq_len) and "geometry" (B, h*w, 4) = sigmoid([x, y, w, h]).
The document gives no classification input besides "CLS token from fused features"; fused Oculus features are
SigLIP2 + DINOv3 patches and have no CLS, so its spec pools the mean (see docs/seed-audit.md).
FLOPs are the matrix products (2 x MACs); the GELU hidden activations are the workspace.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..dims import Dim
from ..ir import TOKENS, VECTOR, TensorType
from ..registry import Op, Params, Slot, W, linear_flops, register
from .basic import check_width


def mlp_weights(fan_in: int, hidden: int, out: int) -> dict[str, W]:
    """fc1 (hidden, in) + bias, fc2 (out, hidden) + bias: torch Linear layouts."""
    return {"fc1.weight": W((hidden, fan_in)), "fc1.bias": W((hidden,), "bias"),
            "fc2.weight": W((out, hidden)), "fc2.bias": W((out,), "bias")}


class HeadParams(Params):
    in_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Input width D; inferred from the input.")
    hidden_dim: int = Field(256, ge=1, le=1_000_000, description="MLP hidden width (the document: 256).")
    num_classes: int = Field(ge=1, le=10_000_000, description="Classes (ADE20K 150, ImageNet 1000, COCO 80).")


def _resolve_in(p, x: TensorType, diag):
    if p.in_dim is None:
        return p.model_copy(update={"in_dim": x.width})
    check_width(diag, x, p.in_dim, "in_dim")
    return p


def _grid_tokens(x: TensorType, diag, what: str) -> bool:
    if x.kind != TOKENS or x.grid is None or len(x.shape) != 3:
        diag("", f"{what} needs patch tokens on a grid (B, h*w, D); the input {x} has no grid",
             "feed it the patch tokens of a vision encoder (or a Concat / GridResample of them)")
        return False
    return True


def _patches(x: TensorType) -> int:
    h, w = x.grid
    return h * w


class _GridHead(Op):
    """Shared rules of the per-patch MLP heads."""

    slots = (Slot("x", (TOKENS,)),)

    @classmethod
    def in_width(cls, p):
        return p.in_dim

    @classmethod
    def resolve(cls, p, ins, diag):
        if not _grid_tokens(ins[0], diag, cls.name):
            return p
        return _resolve_in(p, ins[0], diag)

    @classmethod
    def out_width(cls, p) -> int:
        raise NotImplementedError

    @classmethod
    def weights(cls, p):
        return mlp_weights(p.in_dim, p.hidden_dim, cls.out_width(p))

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        rows = ctx.n(ins[0].shape[0]) * _patches(ins[0])
        return linear_flops(rows, p.in_dim, p.hidden_dim) + linear_flops(rows, p.hidden_dim, cls.out_width(p))

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        return ctx.full(ins[0].shape[0]) * _patches(ins[0]) * p.hidden_dim


# ---------------------------------------------------------------------------------------------------------------------
@register
class SegmentationHead(_GridHead):
    name = "SegmentationHead"
    Params = HeadParams
    doc = "Per-patch MLP D -> hidden -> classes: grid tokens (B, h*w, D) -> logits (B, h, w, classes)."

    @classmethod
    def out_width(cls, p):
        return p.num_classes

    @classmethod
    def shape(cls, p, ins):
        x = ins[0]
        h, w = x.grid
        return {"out": TensorType.make([x.shape[0], h, w, p.num_classes], TOKENS)}      # (B, h, w, classes)


# ---------------------------------------------------------------------------------------------------------------------
class ClassificationParams(HeadParams):
    pool: Literal["auto", "cls", "mean"] = Field(
        "auto", description="Tokens in: cls = the first token (needs a CLS prefix), mean = mean of the patch tokens; "
                            "auto = cls when the input has a CLS token, else mean. A (B, D) vector is used as is.")


@register
class ClassificationHead(Op):
    name = "ClassificationHead"
    Params = ClassificationParams
    slots = (Slot("x", (VECTOR, TOKENS)),)
    doc = "MLP D -> hidden -> classes on a pooled feature: (B, D) or tokens (B, N, D) -> logits (B, classes)."

    @classmethod
    def in_width(cls, p):
        return p.in_dim

    @classmethod
    def resolve(cls, p, ins, diag):
        x = ins[0]
        if x.kind == TOKENS:
            if p.pool == "cls" and x.prefix < 1:
                diag("pool", f"pool 'cls' needs a CLS token, but the input {x} has none",
                     "use pool 'mean' (or 'auto')")
                return p
            if p.pool == "auto":
                p = p.model_copy(update={"pool": "cls" if x.prefix >= 1 else "mean"})
        return _resolve_in(p, x, diag)

    @classmethod
    def shape(cls, p, ins):
        return {"out": TensorType((ins[0].shape[0], Dim.of(p.num_classes)), VECTOR)}   # (B, classes)

    @classmethod
    def weights(cls, p):
        return mlp_weights(p.in_dim, p.hidden_dim, p.num_classes)

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        b = ctx.n(ins[0].shape[0])
        return linear_flops(b, p.in_dim, p.hidden_dim) + linear_flops(b, p.hidden_dim, p.num_classes)

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        return ctx.full(ins[0].shape[0]) * (p.hidden_dim + p.in_dim)


# ---------------------------------------------------------------------------------------------------------------------
class DetectionParams(HeadParams):
    num_anchors: int = Field(9, ge=1, le=1024, description="Anchors per patch (the document: 9).")
    box_dim: int = Field(4, ge=1, le=64, description="Numbers per box (x, y, w, h).")


@register
class DetectionHead(_GridHead):
    name = "DetectionHead"
    Params = DetectionParams
    outputs = ("logits", "boxes")
    doc = ("Per-patch MLP D -> hidden -> anchors x (classes + box): grid tokens -> logits (B, h*w, A, classes) and "
           "boxes (B, h*w, A, 4).")

    @classmethod
    def out_width(cls, p):
        return p.num_anchors * (p.num_classes + p.box_dim)

    @classmethod
    def shape(cls, p, ins):
        b, n = ins[0].shape[0], _patches(ins[0])
        return {"logits": TensorType.make([b, n, p.num_anchors, p.num_classes], TOKENS),   # (B, h*w, A, C)
                "boxes": TensorType.make([b, n, p.num_anchors, p.box_dim], TOKENS)}        # (B, h*w, A, 4)


# ---------------------------------------------------------------------------------------------------------------------
class OCRParams(Params):
    in_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Input width D; inferred from the input.")
    hidden_dim: int = Field(128, ge=1, le=1_000_000, description="CNN width F.")
    kernel_size: int = Field(3, ge=1, le=31, description="Spatial kernel of the second convolution (odd; 'same' "
                                                         "padding).")
    depthwise: bool = Field(True, description="The k x k convolution is depthwise (groups = F).")
    max_seq_len: int = Field(32, ge=1, le=100_000, description="Text logits per position (the document's "
                                                              "max_seq_len).")


@register
class OCRHead(Op):
    name = "OCRHead"
    Params = OCRParams
    slots = (Slot("x", (TOKENS,)),)
    outputs = ("text", "geometry")
    doc = ("CNN (1x1 conv D -> F, GELU, k x k conv, GELU) on the patch map, then per position: text logits "
           "(B, h, w, max_seq_len) and geometry (B, h*w, 4) = sigmoid(x, y, w, h).")

    @classmethod
    def in_width(cls, p):
        return p.in_dim

    @classmethod
    def check(cls, p, diag):
        if p.kernel_size % 2 == 0:
            diag("kernel_size", f"kernel_size {p.kernel_size} must be odd ('same' padding keeps the grid)")

    @classmethod
    def resolve(cls, p, ins, diag):
        if not _grid_tokens(ins[0], diag, cls.name):
            return p
        return _resolve_in(p, ins[0], diag)

    @classmethod
    def shape(cls, p, ins):
        x = ins[0]
        h, w = x.grid
        return {"text": TensorType.make([x.shape[0], h, w, p.max_seq_len], TOKENS),     # (B, h, w, L)
                "geometry": TensorType.make([x.shape[0], h * w, 4], TOKENS)}           # (B, h*w, 4)

    @classmethod
    def weights(cls, p):
        F_, k = p.hidden_dim, p.kernel_size
        return {"conv_in.weight": W((F_, p.in_dim, 1, 1), "conv"), "conv_in.bias": W((F_,), "bias"),
                "conv.weight": W((F_, 1 if p.depthwise else F_, k, k), "conv"), "conv.bias": W((F_,), "bias"),
                "text.weight": W((p.max_seq_len, F_)), "text.bias": W((p.max_seq_len,), "bias"),
                "geometry.weight": W((4, F_)), "geometry.bias": W((4,), "bias")}

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        rows = ctx.n(ins[0].shape[0]) * _patches(ins[0])
        F_ = p.hidden_dim
        conv = 2 * rows * F_ * (1 if p.depthwise else F_) * p.kernel_size ** 2
        return linear_flops(rows, p.in_dim, F_) + conv + linear_flops(rows, F_, p.max_seq_len + 4)

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        rows = ctx.full(ins[0].shape[0]) * _patches(ins[0])
        return rows * (p.in_dim + 2 * p.hidden_dim)
