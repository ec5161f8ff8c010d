"""Leaf layers: Linear, Embedding, Conv2d, LayerNorm, RMSNorm, Activation, Flatten.

Weight names and layouts are torch's (`weight` is (out, in) for Linear, (out, in, k, k) for Conv2d), which are also
the names transformers checkpoints use.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..activations import ACTIVATION_NAMES, Activation
from ..dims import Dim
from ..ir import IDS, IMAGE, TOKENS, VECTOR, TensorType
from ..registry import Op, Params, Slot, W, linear_flops, register


def check_width(diag, t: TensorType, want: Optional[int], field: str, what: str = "input width") -> None:
    if want is not None and t.width is not None and t.width != want:
        diag(field, f"{field} is {want} but the {what} is {t.width} (input shape {t})",
             f"set {field} to {t.width}, or wire a layer of width {want} into it")


# ---------------------------------------------------------------------------------------------------------------------
class LinearParams(Params):
    in_features: Optional[int] = Field(None, ge=1, le=10_000_000, description="Input width; inferred if absent.")
    out_features: int = Field(ge=1, le=10_000_000, description="Output width.")
    bias: bool = Field(True, description="Add a bias vector.")
    tie: Optional[str] = Field(None, description="Id of an Embedding layer whose weight this layer shares "
                                                 "(a tied LM head); counted once.")
    tied_name: Optional[str] = Field(None, description="Resolved: full name of the shared tensor (set by the compiler).")
    role: Literal["linear", "head"] = Field("linear", description="'head' for LM heads (kept 16-bit by quantisers).")
    softcap: Optional[float] = Field(None, gt=0, description="Outputs soft-capped, cap * tanh(y / cap) (Gemma-2/3 "
                                                             "final_logit_softcapping).")


@register
class Linear(Op):
    name = "Linear"
    Params = LinearParams
    slots = (Slot("x", (TOKENS, VECTOR)),)
    doc = "y = x W^T + b on the last dimension."
    decode = "positionwise"

    @classmethod
    def in_width(cls, p):
        return p.in_features

    @classmethod
    def resolve(cls, p, ins, diag):
        if p.in_features is None:
            return p.model_copy(update={"in_features": ins[0].width})
        check_width(diag, ins[0], p.in_features, "in_features")
        return p

    @classmethod
    def shape(cls, p, ins):
        x = ins[0]
        return {"out": x.with_shape(x.shape[:-1] + (p.out_features,))}  # (..., D) -> (..., out)

    @classmethod
    def weights(cls, p):
        role = "head" if (p.role == "head" or p.tie) else "linear"
        w = {"weight": W((p.out_features, p.in_features), role, tied_to=p.tied_name)}
        if p.bias:
            w["bias"] = W((p.out_features,), "bias")
        return w

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        return linear_flops(ctx.n(ins[0].rows()), p.in_features, p.out_features)


# ---------------------------------------------------------------------------------------------------------------------
class EmbeddingParams(Params):
    num_embeddings: int = Field(ge=1, le=100_000_000, description="Vocabulary size V.")
    embedding_dim: int = Field(ge=1, le=1_000_000, description="Width D.")
    scale: Optional[float] = Field(None, description="Multiply the looked-up vectors by this (Gemma: sqrt(D)).")


@register
class Embedding(Op):
    name = "Embedding"
    Params = EmbeddingParams
    slots = (Slot("ids", (IDS,)),)
    doc = "Token embedding: (B, T) ids -> (B, T, D). Starts a text stream."
    decode = "positionwise"

    @classmethod
    def ids_bound(cls, p):
        return p.num_embeddings

    @classmethod
    def shape(cls, p, ins):
        ids = ins[0]
        return {"out": TensorType(ids.shape + (Dim.of(p.embedding_dim),), TOKENS)}  # (B, T) -> (B, T, D)

    @classmethod
    def weights(cls, p):
        return {"weight": W((p.num_embeddings, p.embedding_dim), "embedding")}


# ---------------------------------------------------------------------------------------------------------------------
class Conv2dParams(Params):
    in_channels: Optional[int] = Field(None, ge=1, le=1_000_000, description="Input channels; inferred if absent.")
    out_channels: int = Field(ge=1, le=1_000_000)
    kernel_size: int = Field(ge=1, le=1024)
    stride: int = Field(1, ge=1, le=1024)
    padding: int = Field(0, ge=0, le=1024)
    groups: int = Field(1, ge=1)
    bias: bool = True


def conv_out(n, k: int, s: int, pad: int):
    return (n + 2 * pad - k) // s + 1


@register
class Conv2d(Op):
    name = "Conv2d"
    Params = Conv2dParams
    slots = (Slot("x", (IMAGE,)),)
    doc = "2-D convolution on (B, C, H, W); with kernel = stride it is a patch embedding."

    @classmethod
    def in_width(cls, p):
        return p.in_channels

    @classmethod
    def resolve(cls, p, ins, diag):
        if p.in_channels is None:
            p = p.model_copy(update={"in_channels": ins[0].width})
        else:
            check_width(diag, ins[0], p.in_channels, "in_channels", "number of input channels")
        if p.in_channels % p.groups or p.out_channels % p.groups:
            diag("groups", f"groups {p.groups} must divide in_channels {p.in_channels} and out_channels "
                           f"{p.out_channels}", None)
        for i, d in enumerate(ins[0].shape[2:]):
            if not d.is_const:
                diag("kernel_size", f"spatial size {d} must be a fixed number", None)
            elif d.const + 2 * p.padding < p.kernel_size:
                diag("kernel_size", f"kernel {p.kernel_size} is larger than the padded input ({d.const})", None)
        return p

    @classmethod
    def shape(cls, p, ins):
        x = ins[0]
        b, _, h, w = x.shape
        h2, w2 = conv_out(h, p.kernel_size, p.stride, p.padding), conv_out(w, p.kernel_size, p.stride, p.padding)
        return {"out": TensorType.make([b, p.out_channels, h2, w2], IMAGE)}  # (B, C', H', W')

    @classmethod
    def weights(cls, p):
        w = {"weight": W((p.out_channels, p.in_channels // p.groups, p.kernel_size, p.kernel_size), "conv")}
        if p.bias:
            w["bias"] = W((p.out_channels,), "bias")
        return w

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        o = outs["out"]
        positions = ctx.n(o.numel()) // p.out_channels if p.out_channels else 0
        return 2 * positions * p.out_channels * (p.in_channels // p.groups) * p.kernel_size ** 2


# ---------------------------------------------------------------------------------------------------------------------
class NormParams(Params):
    dim: Optional[int] = Field(None, ge=1, description="Normalised width; inferred if absent.")
    eps: float = Field(1e-5, gt=0, description="Added to the variance.")
    bias: bool = Field(True, description="LayerNorm only: learnable shift.")
    offset: float = Field(0.0, description="RMSNorm only: scale is (offset + weight); Gemma uses 1.0, weights at 0.")


class _Norm(Op):
    slots = (Slot("x", (TOKENS, VECTOR)),)
    decode = "positionwise"

    @classmethod
    def in_width(cls, p):
        return p.dim

    @classmethod
    def resolve(cls, p, ins, diag):
        if p.dim is None:
            return p.model_copy(update={"dim": ins[0].width})
        check_width(diag, ins[0], p.dim, "dim")
        return p

    @classmethod
    def shape(cls, p, ins):
        return {"out": ins[0]}

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        return 0  # elementwise; the FLOP convention counts matrix products only


@register
class LayerNorm(_Norm):
    name = "LayerNorm"
    Params = NormParams
    doc = "(x - mean) / sqrt(var + eps) * weight + bias over the last dimension."

    @classmethod
    def weights(cls, p):
        w = {"weight": W((p.dim,), "norm")}
        if p.bias:
            w["bias"] = W((p.dim,), "norm", init="zeros")
        return w


@register
class RMSNorm(_Norm):
    name = "RMSNorm"
    Params = NormParams
    doc = "x / sqrt(mean(x^2) + eps) * (offset + weight); offset 1 is Gemma's form."

    @classmethod
    def weights(cls, p):
        return {"weight": W((p.dim,), "norm", init="zeros" if p.offset else None)}  # offset 1: weights at 0


# ---------------------------------------------------------------------------------------------------------------------
class ActivationParams(Params):
    fn: Activation = Field("gelu", description="One of compiler/activations.py: " + " | ".join(ACTIVATION_NAMES))


@register
class Activation(Op):
    name = "Activation"
    Params = ActivationParams
    slots = (Slot("x", (TOKENS, VECTOR, IMAGE)),)
    doc = "Elementwise nonlinearity."
    decode = "positionwise"

    @classmethod
    def shape(cls, p, ins):
        return {"out": ins[0]}


# ---------------------------------------------------------------------------------------------------------------------
class FlattenParams(Params):
    pass


@register
class Flatten(Op):
    name = "Flatten"
    Params = FlattenParams
    slots = (Slot("x", (IMAGE,)),)
    doc = "Feature map to tokens: (B, C, H, W) -> (B, H*W, C), row-major over the grid (as ViT patch embeddings)."

    @classmethod
    def resolve(cls, p, ins, diag):
        for d in ins[0].shape[2:]:
            if not d.is_const:
                diag("", f"spatial size {d} must be a fixed number", None)
        return p

    @classmethod
    def shape(cls, p, ins):
        b, c, h, w = ins[0].shape
        return {"out": TensorType.make([b, h * w, c], TOKENS, grid=(h.const, w.const))}  # (B, H*W, C)
