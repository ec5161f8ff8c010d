"""Vision layers: PatchEmbed, AttentionPoolingHead, PixelShuffle, GridResample.

Sources (the reference behaviour; names and layouts are theirs so checkpoints load by prefix only):
  transformers `models/siglip/modeling_siglip.py`   SiglipVisionEmbeddings, SiglipMultiheadAttentionPoolingHead
  transformers `models/siglip2/modeling_siglip2.py` Siglip2VisionEmbeddings (Linear over (py, px, c) patches)
  transformers `models/dinov2/modeling_dinov2.py`   Dinov2Embeddings (CLS row in the position table, bicubic resize)
  transformers `models/dinov3_vit/modeling_dinov3_vit.py` DINOv3ViTEmbeddings (CLS, registers; RoPE in the blocks)
  nanoVLM `models/vision_transformer.py`, `models/modality_projector.py` (pixel shuffle; see seed-systems.md)

PatchEmbed: image (B, C, H, W) -> tokens (B, prefix + h*w, D) on the grid (h, w) = (H // P, W // P), token order
[CLS, registers, patches row-major]; `prefix` = CLS + registers. Learned positions are a table for a fixed
`pos_grid`; the compiler records the input's grid, and the runtime resizes the table when they differ (mode,
antialias as the family does it, always align_corners=False, computed in float32).
Parameter names and table layouts per family are data (`EMBED_NAMES`, `POOL_NAMES`).
PixelShuffle and GridResample have no weights and count 0 FLOPs (data movement and elementwise interpolation; the
FLOP convention of `cost.py` counts matrix products only).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal, Optional

from pydantic import Field

from ..dims import Dim
from ..ir import IMAGE, TOKENS, VECTOR, TensorType
from ..registry import Op, Params, Slot, W, linear_flops, register

# --- names and layouts per family ---------------------------------------------------------------------------------
# proj: the patch projection (Conv2d or Linear) module; pos: the position table tensor; pos_layout: "rows" (N, D)
# (an nn.Embedding weight) or "batched" (1, N, D); cls / registers: (1, 1, D) / (1, R, D); mask: the unused
# mask_token, "flat" (1, D) or "batched" (1, 1, D); registers_always: the family declares register_tokens even
# when R = 0 (DINOv3 does), so a checkpoint loads strictly. A role missing from a family cannot be used with it.
EMBED_NAMES: dict[str, dict] = {
    "omnic": dict(proj="proj", pos="pos_embed", pos_layout="batched", cls="cls_token", registers="register_tokens",
                  mask="mask_token", mask_layout="batched"),
    "siglip": dict(proj="patch_embedding", pos="position_embedding.weight", pos_layout="rows"),
    "siglip2": dict(proj="patch_embedding", pos="position_embedding.weight", pos_layout="rows"),   # a Linear proj
    "dinov2": dict(proj="patch_embeddings.projection", pos="position_embeddings", pos_layout="batched",
                   cls="cls_token", mask="mask_token", mask_layout="flat"),
    "dinov3": dict(proj="patch_embeddings", cls="cls_token", registers="register_tokens", mask="mask_token",
                   mask_layout="batched", registers_always=True),
    "nanovlm": dict(proj="conv", pos="position_embedding", pos_layout="batched", cls="cls_token",
                    registers="register_tokens"),                    # registers: the amazingvince/nanoVLM fork
}
EMBED_FAMILIES = tuple(EMBED_NAMES)

# AttentionPoolingHead: SigLIP's MAP head (an nn.MultiheadAttention with packed in_proj, then LayerNorm + MLP)
POOL_NAMES: dict[str, dict] = {
    "siglip": dict(probe="probe", in_proj="attention.in_proj_", out="attention.out_proj", norm="layernorm",
                   fc1="mlp.fc1", fc2="mlp.fc2"),
    "omnic": dict(probe="probe", in_proj="attn.in_proj_", out="attn.out_proj", norm="norm", fc1="mlp.fc1",
                  fc2="mlp.fc2"),
}


def _const_hw(t: TensorType) -> Optional[tuple[int, int]]:
    h, w = t.shape[2], t.shape[3]
    return (h.const, w.const) if h.is_const and w.is_const else None


# --- PatchEmbed -----------------------------------------------------------------------------------------------------
class PatchEmbedParams(Params):
    embed_dim: int = Field(ge=1, le=1_000_000, description="Token width D.")
    patch_size: int = Field(ge=1, le=1024, description="Patch side P (kernel = stride).")
    in_channels: Optional[int] = Field(None, ge=1, le=4096, description="Image channels C; inferred.")
    kind: Literal["conv", "linear"] = Field(
        "conv", description="conv: Conv2d (D, C, P, P); linear: Linear (D, P*P*C) over patches flattened in "
                            "(py, px, c) order (SigLIP2's processor layout).")
    bias: bool = Field(True, description="Bias of the patch projection.")
    positions: Literal["learned", "none"] = Field(
        "learned", description="learned: an added position table; none: no absolute positions (RoPE in blocks).")
    pos_grid: Optional[list[int]] = Field(
        None, min_length=2, max_length=2, description="[h, w] of the position table (the training grid); default: "
                                                      "the input's grid.")
    pos_cls: bool = Field(False, description="The table has a first row for the CLS token (DINOv2).")
    interpolate: Literal["bicubic", "bilinear"] = Field(
        "bicubic", description="How the table is resized to another grid (DINOv2, SigLIP: bicubic; SigLIP2: "
                               "bilinear with antialias).")
    antialias: bool = Field(False, description="Antialiased resize (SigLIP2).")
    cls_token: bool = Field(False, description="Prepend a learned CLS token.")
    registers: int = Field(0, ge=0, le=1024, description="Learned register tokens after the CLS token.")
    mask_token: bool = Field(False, description="Declare the (unused at inference) mask_token of DINOv2/DINOv3.")
    names: Literal[EMBED_FAMILIES] = Field("omnic", description="Parameter naming family: " +
                                                                ", ".join(EMBED_FAMILIES))
    grid: Optional[list[int]] = Field(None, description="Resolved: the input's patch grid [h, w].")

    @property
    def prefix(self) -> int:
        return int(self.cls_token) + self.registers

    @property
    def table_rows(self) -> int:
        h, w = self.pos_grid
        return h * w + int(self.pos_cls)


@register
class PatchEmbed(Op):
    name = "PatchEmbed"
    Params = PatchEmbedParams
    slots = (Slot("image", (IMAGE,)),)
    doc = "Image (B, C, H, W) -> tokens (B, prefix + h*w, D) on a patch grid, with CLS / registers / positions."

    @classmethod
    def in_width(cls, p):
        return p.in_channels

    @classmethod
    def check(cls, p, diag):
        t = EMBED_NAMES[p.names]
        for want, role in ((p.positions == "learned", "pos"), (p.cls_token, "cls"), (p.registers > 0, "registers"),
                           (p.mask_token, "mask")):
            if want and role not in t:
                diag("names", f"naming family '{p.names}' has no {role} tensor",
                     "use names 'omnic', or a family that has it")
        if p.pos_cls and not p.cls_token:
            diag("pos_cls", "pos_cls needs cls_token: the table's first row is the CLS token's position")
        if p.pos_grid is not None and min(p.pos_grid) < 1:
            diag("pos_grid", f"pos_grid must be positive, got {p.pos_grid}")

    @classmethod
    def resolve(cls, p, ins, diag):
        x = ins[0]
        up = {}
        C = x.width
        if p.in_channels is None:
            up["in_channels"] = C
        elif C is not None and C != p.in_channels:
            diag("in_channels", f"in_channels is {p.in_channels} but the image has {C} channels ({x})")
            return p
        hw = _const_hw(x)
        if hw is None:
            diag("patch_size", f"image height and width must be fixed numbers, got {x}")
            return p
        H, W_ = hw
        P = p.patch_size
        if H < P or W_ < P:
            diag("patch_size", f"patch {P} is larger than the image {H}x{W_}")
            return p
        if H % P or W_ % P:
            if p.kind == "linear":
                diag("patch_size", f"image {H}x{W_} is not a multiple of the patch {P}",
                     "resize the image to a multiple of the patch size")
                return p
            diag("patch_size", f"image {H}x{W_} is not a multiple of the patch {P}: the last "
                               f"{H % P} rows / {W_ % P} columns are dropped", severity="warning")
        grid = [H // P, W_ // P]
        up["grid"] = grid
        if p.positions == "learned" and p.pos_grid is None:
            up["pos_grid"] = grid
        return p.model_copy(update=up)

    @classmethod
    def shape(cls, p, ins):
        b = ins[0].shape[0]
        h, w = p.grid
        out = TensorType.make([b, p.prefix + h * w, p.embed_dim], TOKENS, grid=(h, w), prefix=p.prefix)
        return {"out": replace(out, positioned=p.positions == "learned")}      # (B, prefix + h*w, D)

    @classmethod
    def weights(cls, p):
        t = EMBED_NAMES[p.names]
        D, P, C = p.embed_dim, p.patch_size, p.in_channels
        w: dict[str, W] = {}
        if p.kind == "conv":
            w[t["proj"] + ".weight"] = W((D, C, P, P), "conv")
        else:
            w[t["proj"] + ".weight"] = W((D, P * P * C))
        if p.bias:
            w[t["proj"] + ".bias"] = W((D,), "bias")
        if p.positions == "learned":
            rows = p.table_rows
            w[t["pos"]] = W((rows, D) if t["pos_layout"] == "rows" else (1, rows, D), "other")
        if p.cls_token:
            w[t["cls"]] = W((1, 1, D), "other")
        if p.registers or ("registers" in t and t.get("registers_always")):
            w[t["registers"]] = W((1, p.registers, D), "other")
        if p.mask_token:
            w[t["mask"]] = W((1, D) if t["mask_layout"] == "flat" else (1, 1, D), "other", init="zeros")
        return w

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        h, w = p.grid
        b = ctx.n(ins[0].shape[0])
        return linear_flops(b * h * w, p.in_channels * p.patch_size ** 2, p.embed_dim)

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        h, w = p.grid
        b = ctx.full(ins[0].shape[0])
        resized = h * w * p.embed_dim if p.positions == "learned" and p.pos_grid != p.grid else 0
        patches = b * h * w * p.in_channels * p.patch_size ** 2 if p.kind == "linear" else 0
        return b * h * w * p.embed_dim + resized + patches


# --- AttentionPoolingHead -------------------------------------------------------------------------------------------
class PoolParams(Params):
    embed_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Width D; inferred.")
    num_heads: int = Field(ge=1, le=4096, description="Heads of the probe's attention.")
    ff_dim: int = Field(ge=1, le=10_000_000, description="Hidden width of the head's MLP.")
    mlp: Literal["gelu", "gelu_tanh"] = Field("gelu_tanh", description="The MLP's activation.")
    norm_eps: float = Field(1e-6, gt=0)
    names: Literal[tuple(POOL_NAMES)] = "omnic"

    @property
    def head_dim(self) -> int:
        """Head size (the runtimes read it): D / num_heads."""
        return self.embed_dim // self.num_heads

    @property
    def scale(self) -> float:
        """Attention score scale: head_dim^-0.5."""
        return self.head_dim ** -0.5


@register
class AttentionPoolingHead(Op):
    name = "AttentionPoolingHead"
    Params = PoolParams
    slots = (Slot("x", (TOKENS,)),)
    doc = ("SigLIP's multihead attention pooling: a learned probe attends to all tokens (packed q|k|v in_proj, "
           "out_proj), then h + MLP(LayerNorm(h)); (B, N, D) -> (B, D).")

    @classmethod
    def in_width(cls, p):
        return p.embed_dim

    @classmethod
    def resolve(cls, p, ins, diag):
        D = ins[0].width
        if p.embed_dim is not None and D is not None and D != p.embed_dim:
            diag("embed_dim", f"embed_dim is {p.embed_dim} but the input is {ins[0]}")
            return p
        D = p.embed_dim or D
        if D % p.num_heads:
            diag("num_heads", f"num_heads {p.num_heads} does not divide the width {D}")
            return p
        return p.model_copy(update={"embed_dim": D})

    @classmethod
    def shape(cls, p, ins):
        return {"out": TensorType((ins[0].shape[0], Dim.of(p.embed_dim)), VECTOR)}    # (B, D)

    @classmethod
    def weights(cls, p):
        t = POOL_NAMES[p.names]
        D, F = p.embed_dim, p.ff_dim
        return {
            t["probe"]: W((1, 1, D), "other"),
            t["in_proj"] + "weight": W((3 * D, D)), t["in_proj"] + "bias": W((3 * D,), "bias"),
            t["out"] + ".weight": W((D, D)), t["out"] + ".bias": W((D,), "bias"),
            t["norm"] + ".weight": W((D,), "norm"), t["norm"] + ".bias": W((D,), "norm", init="zeros"),
            t["fc1"] + ".weight": W((F, D)), t["fc1"] + ".bias": W((F,), "bias"),
            t["fc2"] + ".weight": W((D, F)), t["fc2"] + ".bias": W((D,), "bias"),
        }

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        x = ins[0]
        b, n, D = ctx.n(x.shape[0]), ctx.full(x.shape[1]), p.embed_dim
        if b == 0:
            return 0
        return (linear_flops(b, D, D) + linear_flops(b * n, D, 2 * D) + 4 * b * n * D   # q; k, v; scores + mix
                + linear_flops(b, D, D) + 2 * linear_flops(b, D, p.ff_dim))            # out_proj; MLP

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        x = ins[0]
        b, n = ctx.full(x.shape[0]), ctx.full(x.shape[1])
        return b * n * 2 * p.embed_dim + b * p.num_heads * n + b * p.ff_dim


# --- PixelShuffle ---------------------------------------------------------------------------------------------------
class PixelShuffleParams(Params):
    factor: int = Field(ge=1, le=64, description="s: each s x s block of grid tokens becomes one token of "
                                                 "width D*s*s.")


@register
class PixelShuffle(Op):
    name = "PixelShuffle"
    Params = PixelShuffleParams
    slots = (Slot("x", (TOKENS,)),)
    doc = ("nanoVLM's pixel shuffle (space to depth) on grid tokens: (B, h*w, D) -> (B, (h/s)*(w/s), D*s*s); "
           "view (B, h, w, D) -> (B, h/s, s, w/s, s, D) -> permute (0, 1, 3, 2, 4, 5) -> reshape.")

    @classmethod
    def resolve(cls, p, ins, diag):
        t = ins[0]
        if t.grid is None:
            diag("factor", f"input {t} has no patch grid; pixel shuffle needs tokens from a PatchEmbed")
        elif t.prefix:
            diag("factor", f"input {t} has {t.prefix} CLS/register tokens before its grid",
                 "drop them first: a Select layer with tokens 'patches'")
        elif t.grid[0] % p.factor or t.grid[1] % p.factor:
            diag("factor", f"factor {p.factor} does not divide the grid {t.grid[0]}x{t.grid[1]}")
        return p

    @classmethod
    def shape(cls, p, ins):
        t = ins[0]
        s = p.factor
        h, w = t.grid[0] // s, t.grid[1] // s
        out = TensorType.make([t.shape[0], h * w, t.shape[2] * (s * s)], TOKENS, grid=(h, w))
        return {"out": replace(out, positioned=t.positioned)}                 # (B, h/s * w/s, D*s*s)


# --- GridResample ---------------------------------------------------------------------------------------------------
class GridResampleParams(Params):
    size: list[int] = Field(min_length=2, max_length=2, description="Target grid [H, W].")
    mode: Literal["bilinear", "area"] = Field(
        "bilinear", description="bilinear (align_corners False, no antialias) or area (adaptive average pooling).")


@register
class GridResample(Op):
    name = "GridResample"
    Params = GridResampleParams
    slots = (Slot("x", (TOKENS,)),)
    doc = ("Resample grid tokens from h x w to H x W: (B, prefix + h*w, D) -> (B, prefix + H*W, D); prefix "
           "(CLS / register) tokens pass through unchanged.")

    @classmethod
    def check(cls, p, diag):
        if min(p.size) < 1:
            diag("size", f"size must be positive, got {p.size}")

    @classmethod
    def resolve(cls, p, ins, diag):
        t = ins[0]
        if t.grid is None:
            diag("size", f"input {t} has no patch grid to resample")
        return p

    @classmethod
    def shape(cls, p, ins):
        t = ins[0]
        H, W_ = p.size
        out = TensorType.make([t.shape[0], t.prefix + H * W_, t.shape[2]], TOKENS, grid=(H, W_), prefix=t.prefix)
        return {"out": replace(out, positioned=t.positioned)}                 # (B, prefix + H*W, D)
