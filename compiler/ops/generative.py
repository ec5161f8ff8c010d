"""Generative layers: AdaLNZeroBlock (DiT's conditioned block), FlowMatchingHead (rectified flow velocity readout)
and VQVAEDecoder (latents -> image).

AdaLNZeroBlock. The DiT block (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", sec. 3.2, the
adaLN-Zero variant; names as the reference implementation's `DiTBlock`, so its checkpoints' `blocks.{i}.*` load):
tokens x (B, N, D) conditioned on one vector c (B, C) per example (a timestep and/or class embedding):
    shift1, scale1, gate1, shift2, scale2, gate2 = adaLN_modulation.1(silu(c)).chunk(6)      (B, 1, D) each
    x = x + gate1 * attn.proj(MHA(attn.qkv(LN(x) * (1 + scale1) + shift1)))          bidirectional, H heads
    x = x + gate2 * mlp.fc2(act(mlp.fc1(LN(x) * (1 + scale2) + shift2)))             act gelu (tanh) by default
  LN has no parameters (eps 1e-6); attn.qkv packs q | k | v, each H heads of D / H. "Zero": adaLN_modulation.1 is
  initialised to zero, so every gate is 0 and a freshly built block is the identity (DiT's `initialize_weights`).

FlowMatchingHead. Rectified flow (Liu et al. 2022) trains v(x_t, t) ~ x_1 - x_0 on x_t = t x_1 + (1 - t) x_0; the
noisy latents reach this head through the backbone tokens it reads, and the head is the timestep-conditioned MLP
that turns each token into `out_dim` latent values (the shape of MAR's `SimpleMLPAdaLN` / DiT's final layer):
    e    = sinusoid(t * time_scale)                           (B, freq_dim)   cos | sin halves, max period 10^4
    c    = time_embed.fc2(silu(time_embed.fc1(e)))            (B, F)
    h    = in_proj(x)                                         (B, N, F)
  conditioning "adaln", per block i (`num_blocks` blocks):
    shift, scale, gate = blocks.i.ada(silu(c)).chunk(3)       (B, 1, F) each
    h    = h + gate * blocks.i.mlp.fc2(silu(blocks.i.mlp.fc1(LN(h) * (1 + scale) + shift)))
    shift, scale = final_ada(silu(c)).chunk(2);  y = out_proj(LN(h) * (1 + scale) + shift)        (B, N, out_dim)
  conditioning "add": h = in_proj(x) + c, blocks h = h + mlp(LN(h)), y = out_proj(LN(h)).
  block "adaln_zero" (conditioning adaln): each block i is instead an AdaLNZeroBlock of width F over the N tokens,
  conditioned on c (weights blocks.i.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1}, MLP width
  ff_dim, default 4 F), and final_ada and out_proj start at zero as DiT's final layer does (velocity 0 at init).
  LN is a LayerNorm without parameters (eps 1e-6). Inputs: tokens, and the time t (B,) when the spec wires one (a
  `scalar` input); without it the torch module takes `t` as a forward keyword. `grid` lays the output tokens on an
  h x w grid so a Reshape(to="map", channels=C) can assemble the latent map (C x s x s values per token).

VQVAEDecoder. Input a latent map (B, C, h, w). With a codebook (K, C), each latent vector is first replaced by its
nearest code (squared L2; straight-through: z + (z_q - z).detach()); the codebook counts as parameters either way.
Then conv_in (3x3, C -> channels[0]), one stage per further entry of `channels` (nearest-neighbour x2 upsampling,
SiLU, 3x3 conv channels[i-1] -> channels[i]), SiLU, conv_out (3x3 -> out_channels): (B, 3, h * 2^s, w * 2^s).
With `channels` empty it is the seed's single Conv2d(C -> out, 3x3). No norms: the simplest decoder that has the
structure (Esser et al. 2021 add GroupNorm and residual blocks). All convolutions pad 1.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..dims import Dim
from ..ir import IMAGE, SCALAR, TOKENS, VECTOR, TensorType
from ..registry import Op, Params, Slot, W, linear_flops, register
from .basic import check_width


# ---------------------------------------------------------------------------------------------------------------------
ADALN_ACTS = ("gelu_tanh", "gelu", "silu")


def adaln_zero_weights(D: int, C: int, F_: int, qkv_bias: bool = True) -> dict[str, W]:
    """The tensors of one AdaLN-Zero block of width D, conditioning width C and MLP width F (DiT's names)."""
    w = {"attn.qkv.weight": W((3 * D, D))}
    if qkv_bias:
        w["attn.qkv.bias"] = W((3 * D,), "bias")
    w.update({"attn.proj.weight": W((D, D)), "attn.proj.bias": W((D,), "bias"),
              "mlp.fc1.weight": W((F_, D)), "mlp.fc1.bias": W((F_,), "bias"),
              "mlp.fc2.weight": W((D, F_)), "mlp.fc2.bias": W((D,), "bias"),
              "adaLN_modulation.1.weight": W((6 * D, C), init="zeros"),
              "adaLN_modulation.1.bias": W((6 * D,), "bias", init="zeros")})
    return w


def adaln_zero_flops(D: int, C: int, F_: int, heads: int, b: int, rows: int, n_q: int, n_kv: int) -> int:
    """Modulation per example, q|k|v, output projection and MLP per token, and attention (4 n_q n_kv D per
    example: scores and weighted values)."""
    return (linear_flops(b, C, 6 * D) + linear_flops(rows, D, 3 * D) + linear_flops(rows, D, D)
            + linear_flops(rows, D, F_) + linear_flops(rows, F_, D) + 4 * b * n_q * n_kv * D)


def check_heads(diag, field: str, heads: Optional[int], width: int, what: str) -> None:
    if heads is None:
        diag(field, f"{what} needs num_heads", "DiT-XL uses 16 heads of 72; any divisor of the width works")
    elif width % heads:
        diag(field, f"num_heads {heads} does not divide the width {width}", f"choose a divisor of {width}")


class AdaLNZeroParams(Params):
    embed_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Token width D; inferred from x.")
    cond_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Width C of the conditioning vector; "
                                                                          "inferred from c (DiT: C = D).")
    num_heads: int = Field(ge=1, le=4096, description="Attention heads (divides D).")
    ff_dim: Optional[int] = Field(None, ge=1, le=10_000_000, description="MLP width; default 4 D (mlp_ratio 4).")
    mlp: Literal[ADALN_ACTS] = Field("gelu_tanh", description="MLP activation: gelu_tanh (DiT) | gelu | silu.")
    qkv_bias: bool = Field(True, description="Bias in attn.qkv (DiT: yes).")


@register
class AdaLNZeroBlock(Op):
    name = "AdaLNZeroBlock"
    Params = AdaLNZeroParams
    slots = (Slot("x", (TOKENS,)), Slot("c", (VECTOR,)))
    doc = "DiT block with adaLN-Zero: tokens (B, N, D) and a condition (B, C) -> (B, N, D); the identity at init."

    @classmethod
    def in_width(cls, p):
        return p.embed_dim

    @classmethod
    def resolve(cls, p, ins, diag):
        x, c = ins
        up = {}
        if p.embed_dim is None:
            up["embed_dim"] = x.width
        else:
            check_width(diag, x, p.embed_dim, "embed_dim")
        if p.cond_dim is None:
            up["cond_dim"] = c.width
        else:
            check_width(diag, c, p.cond_dim, "cond_dim", "conditioning width")
        if c.shape[0] != x.shape[0]:
            diag("", f"the condition {c} and the tokens {x} have different batch sizes")
        D = up.get("embed_dim", p.embed_dim)
        if D is not None:
            check_heads(diag, "num_heads", p.num_heads, D, "AdaLNZeroBlock")
            up["ff_dim"] = p.ff_dim or 4 * D
        return p.model_copy(update=up)

    @classmethod
    def shape(cls, p, ins):
        return {"out": ins[0]}                                                # (B, N, D) -> (B, N, D)

    @classmethod
    def weights(cls, p):
        return adaln_zero_weights(p.embed_dim, p.cond_dim, p.ff_dim, p.qkv_bias)

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        x = ins[0]
        b, n = ctx.n(x.shape[0]), ctx.n(x.shape[1])
        return adaln_zero_flops(p.embed_dim, p.cond_dim, p.ff_dim, p.num_heads, b, ctx.n(x.rows()), n, n)

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        """The modulated input, then the larger of attention (q, k, v, scores) and the MLP's hidden layer."""
        x = ins[0]
        rows, b, n = ctx.full(x.rows()), ctx.full(x.shape[0]), ctx.full(x.shape[1])
        D = p.embed_dim
        return rows * D + max(rows * 3 * D + b * p.num_heads * n * n, rows * p.ff_dim)


# ---------------------------------------------------------------------------------------------------------------------
class FlowParams(Params):
    in_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Token width D; inferred from the input.")
    hidden_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="MLP width F; default D.")
    out_dim: int = Field(ge=1, le=1_000_000, description="Latent values per token (4 channels x 8 x 8 = 256).")
    num_blocks: int = Field(2, ge=0, le=64, description="Residual MLP blocks.")
    conditioning: Literal["adaln", "add"] = Field(
        "adaln", description="adaln: the time embedding sets shift/scale/gate of every block and the output; add: "
                             "it is added to the projected tokens.")
    block: Literal["mlp", "adaln_zero"] = Field(
        "mlp", description="mlp: residual MLP blocks; adaln_zero: DiT blocks (attention + MLP, adaLN-Zero; needs "
                           "conditioning adaln and num_heads).")
    num_heads: Optional[int] = Field(None, ge=1, le=4096, description="adaln_zero blocks: attention heads.")
    ff_dim: Optional[int] = Field(None, ge=1, le=10_000_000, description="adaln_zero blocks: MLP width; default "
                                                                         "4 F.")
    freq_dim: int = Field(256, ge=2, le=65536, description="Sinusoidal features of t (even).")
    time_scale: float = Field(1000.0, gt=0, description="t in [0, 1] is multiplied by this before the sinusoid.")
    grid: Optional[list[int]] = Field(None, min_length=2, max_length=2,
                                      description="[h, w]: lay the output tokens on this grid (N = h*w).")


@register
class FlowMatchingHead(Op):
    name = "FlowMatchingHead"
    Params = FlowParams
    slots = (Slot("x", (TOKENS,)), Slot("t", (SCALAR,), optional=True))
    doc = "Rectified-flow velocity head: tokens (B, N, D) [+ time (B,)] -> (B, N, out_dim), timestep-conditioned."

    @classmethod
    def in_width(cls, p):
        return p.in_dim

    @classmethod
    def check(cls, p, diag):
        if p.freq_dim % 2:
            diag("freq_dim", f"freq_dim {p.freq_dim} must be even (cosine and sine halves)")
        if p.block == "adaln_zero" and p.conditioning != "adaln":
            diag("block", "adaln_zero blocks are conditioned by adaLN: they need conditioning 'adaln'")
        if p.block == "mlp":
            for f in ("num_heads", "ff_dim"):
                if getattr(p, f) is not None:
                    diag(f, f"{f} sets the adaln_zero blocks, but block is 'mlp'", "set block to 'adaln_zero'")

    @classmethod
    def resolve(cls, p, ins, diag):
        x = ins[0]
        up = {}
        if p.in_dim is None:
            up["in_dim"] = x.width
        else:
            check_width(diag, x, p.in_dim, "in_dim")
        up["hidden_dim"] = F_ = p.hidden_dim or up.get("in_dim", p.in_dim)
        if p.block == "adaln_zero" and F_ is not None:
            check_heads(diag, "num_heads", p.num_heads, F_, "block 'adaln_zero'")
            up["ff_dim"] = p.ff_dim or 4 * F_
        if len(ins) > 1 and ins[1].shape[0] != x.shape[0]:
            diag("", f"time {ins[1]} and tokens {x} have different batch sizes")
        if p.grid is not None:
            n = x.shape[1]
            if not n.is_const or n.const != p.grid[0] * p.grid[1]:
                diag("grid", f"grid {p.grid[0]}x{p.grid[1]} needs {p.grid[0] * p.grid[1]} tokens; the input {x} has "
                             f"{n}", "Select the latent positions first (Select tokens 'range')")
        return p.model_copy(update=up)

    @classmethod
    def shape(cls, p, ins):
        x = ins[0]
        return {"out": TensorType(x.shape[:-1] + (Dim.of(p.out_dim),), TOKENS,
                                  grid=tuple(p.grid) if p.grid else None)}           # (B, N, out_dim)

    @classmethod
    def weights(cls, p):
        D, F_ = p.in_dim, p.hidden_dim
        w = {"time_embed.fc1.weight": W((F_, p.freq_dim)), "time_embed.fc1.bias": W((F_,), "bias"),
             "time_embed.fc2.weight": W((F_, F_)), "time_embed.fc2.bias": W((F_,), "bias"),
             "in_proj.weight": W((F_, D)), "in_proj.bias": W((F_,), "bias")}
        zero = "zeros" if p.block == "adaln_zero" else None                   # DiT's final layer starts at 0
        for i in range(p.num_blocks):
            b = f"blocks.{i}."
            if p.block == "adaln_zero":
                w.update({b + k: v for k, v in adaln_zero_weights(F_, F_, p.ff_dim).items()})
                continue
            w.update({b + "mlp.fc1.weight": W((F_, F_)), b + "mlp.fc1.bias": W((F_,), "bias"),
                      b + "mlp.fc2.weight": W((F_, F_)), b + "mlp.fc2.bias": W((F_,), "bias")})
            if p.conditioning == "adaln":
                w.update({b + "ada.weight": W((3 * F_, F_)), b + "ada.bias": W((3 * F_,), "bias")})
        if p.conditioning == "adaln":
            w.update({"final_ada.weight": W((2 * F_, F_), init=zero), "final_ada.bias": W((2 * F_,), "bias")})
        w.update({"out_proj.weight": W((p.out_dim, F_), init=zero), "out_proj.bias": W((p.out_dim,), "bias")})
        return w

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        x = ins[0]
        rows, b = ctx.n(x.rows()), ctx.n(x.shape[0])
        F_ = p.hidden_dim
        adaln = p.conditioning == "adaln"
        time = linear_flops(b, p.freq_dim, F_) + linear_flops(b, F_, F_) + adaln * linear_flops(b, F_, 2 * F_)
        ends = linear_flops(rows, p.in_dim, F_) + linear_flops(rows, F_, p.out_dim)
        if p.block == "adaln_zero":
            n = ctx.n(x.shape[1])
            block = adaln_zero_flops(F_, F_, p.ff_dim, p.num_heads, b, rows, n, n)
        else:
            block = 2 * linear_flops(rows, F_, F_) + adaln * linear_flops(b, F_, 3 * F_)
        return time + ends + p.num_blocks * block

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        x = ins[0]
        rows = ctx.full(x.rows())
        if p.block == "adaln_zero":
            b, n, F_ = ctx.full(x.shape[0]), ctx.full(x.shape[1]), p.hidden_dim
            return rows * F_ + max(rows * 3 * F_ + b * p.num_heads * n * n, rows * p.ff_dim) + rows * F_
        return 3 * rows * p.hidden_dim


# ---------------------------------------------------------------------------------------------------------------------
class VQVAEDecoderParams(Params):
    in_channels: Optional[int] = Field(None, ge=1, le=65536, description="Latent channels C; inferred.")
    out_channels: int = Field(3, ge=1, le=65536, description="Image channels.")
    channels: list[int] = Field([], max_length=16, description="Width after conv_in, then after each x2 "
                                                               "upsampling stage; [] = the single conv of the seed.")
    codebook_size: Optional[int] = Field(None, ge=1, le=10_000_000, description="Codes K of the (K, C) codebook.")
    quantize: bool = Field(True, description="Snap the input latents to their nearest code (needs a codebook).")

    @property
    def stages(self) -> int:
        return max(len(self.channels) - 1, 0)


@register
class VQVAEDecoder(Op):
    name = "VQVAEDecoder"
    Params = VQVAEDecoderParams
    slots = (Slot("z", (IMAGE,)),)
    doc = "Latent map (B, C, h, w) -> [nearest code] -> conv_in -> (x2 upsample + conv) x s -> conv_out -> image."

    @classmethod
    def in_width(cls, p):
        return p.in_channels

    @classmethod
    def check(cls, p, diag):
        if any(c < 1 for c in p.channels):
            diag("channels", f"channel widths must be positive, got {p.channels}")
        if p.quantize and p.codebook_size is None and "quantize" in p.model_fields_set:
            diag("quantize", "quantize needs a codebook: set codebook_size")

    @classmethod
    def resolve(cls, p, ins, diag):
        z = ins[0]
        if p.in_channels is None:
            p = p.model_copy(update={"in_channels": z.width})
        else:
            check_width(diag, z, p.in_channels, "in_channels", "number of latent channels")
        for d in z.shape[2:]:
            if not d.is_const:
                diag("", f"latent height and width must be fixed numbers, got {z}")
        return p

    @classmethod
    def shape(cls, p, ins):
        b, _, h, w = ins[0].shape
        s = 2 ** p.stages
        return {"out": TensorType.make([b, p.out_channels, h * s, w * s], IMAGE)}          # (B, 3, h*2^s, w*2^s)

    @classmethod
    def convs(cls, p) -> list[tuple[str, int, int, int]]:
        """(name, in, out, upsampling before it) of every 3x3 convolution, in order."""
        if not p.channels:
            return [("conv_out", p.in_channels, p.out_channels, 0)]
        out = [("conv_in", p.in_channels, p.channels[0], 0)]
        out += [(f"up.{i}", p.channels[i], p.channels[i + 1], 1) for i in range(p.stages)]
        return out + [("conv_out", p.channels[-1], p.out_channels, 0)]

    @classmethod
    def weights(cls, p):
        w = {}
        if p.codebook_size is not None:
            w["codebook.weight"] = W((p.codebook_size, p.in_channels), "embedding")
        for name, cin, cout, _ in cls.convs(p):
            w[name + ".weight"] = W((cout, cin, 3, 3), "conv")
            w[name + ".bias"] = W((cout,), "bias")
        return w

    @classmethod
    def _maps(cls, p, z: TensorType, n):
        """(positions at its output, in, out) of every convolution; n evaluates a Dim."""
        b, _, h, w = z.shape
        hw = n(b) * h.const * w.const
        out = []
        for _, cin, cout, up in cls.convs(p):
            hw *= 4 if up else 1
            out.append((hw, cin, cout))
        return out

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        z = ins[0]
        total = sum(2 * hw * cin * cout * 9 for hw, cin, cout in cls._maps(p, z, ctx.n))
        if p.codebook_size is not None and p.quantize:
            positions = ctx.n(z.shape[0]) * z.shape[2].const * z.shape[3].const
            total += linear_flops(positions, p.in_channels, p.codebook_size)      # distances to every code
        return total

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        z = ins[0]
        maps = cls._maps(p, z, ctx.full)
        peak = max((hw * (cin + cout) for hw, cin, cout in maps), default=0)   # (upsampled) input + output
        if p.codebook_size is not None and p.quantize:
            positions = ctx.full(z.shape[0]) * z.shape[2].const * z.shape[3].const
            peak = max(peak, positions * p.codebook_size)
        return peak
