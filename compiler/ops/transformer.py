"""TransformerBlock: pre-norm attention + MLP (or short convolution, or mixture of experts) with residuals.

One declaration covers the families the seed systems use; they differ in values, not classes:
  Llama / SmolLM2   rmsnorm, swiglu, causal, rope 1d, no biases             names "llama"
  Gemma-3           rmsnorm offset 1, geglu (tanh), q/k norm, post norms, sliding/full pattern, attn_scale
  Gemma-2           as Gemma-3 without q/k norm, attention logits soft-capped (attn_softcap)
  Qwen2 / Qwen3     q/k/v biases / per-head q/k norm; Mistral: every layer sliding
  Phi-3             fused q|k|v (GQA) and gate|up projections, longrope          names "phi3"
  SmolLM3           no rotary positions on every 4th layer (nope_layers)
  OLMo-2            post norms only (pre_norms false), q/k norm over the whole projection  names "olmo2"
  SigLIP(2) vision  layernorm, gelu_tanh MLP, all biases, bidirectional     names "siglip"
  DINOv2            layernorm, gelu, LayerScale                             names "dinov2"
  DINOv3            + 2-D RoPE on patch tokens, no key bias, registers      names "dinov3"
  LFM2              layer_types mixes "conv" (gated short convolution) and "full_attention"; q/k norm
  OMNI-LITE MoE     GQA_MoE_Layer: attention + top-k routed SwiGLU experts (see moe.py)
`depth` / `repeat` unroll into numbered nodes; `layer_types[i]` picks each one's mixer.
Shapes: (B, N, D) -> (B, N, D); grid and prefix of the input are kept.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal, Optional

from pydantic import Field

from ..activations import GATED, MLPKind, activation_of
from ..ir import TOKENS
from ..registry import Ctx, Op, Params, Slot, State, W, register
from ..rope import RopeScaling, resolve_scaling
from .naming import FAMILIES, NAMES, name_of

LayerType = Literal["full_attention", "sliding_attention", "conv"]


class BlockParams(Params):
    # widths ------------------------------------------------------------------------------------------------------
    embed_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Width D; inferred from the input.")
    hidden_dim: Optional[int] = Field(None, ge=1, le=1_000_000, description="Synonym of embed_dim (seed spelling).")
    num_heads: Optional[int] = Field(None, ge=1, le=4096, description="Attention heads; default D / 64 (warned).")
    num_kv_heads: Optional[int] = Field(None, ge=1, le=4096, description="Key/value heads (GQA); default num_heads.")
    head_dim: Optional[int] = Field(None, ge=1, le=4096, description="Head size; default D / num_heads.")
    ff_dim: Optional[int] = Field(None, ge=1, le=10_000_000, description="MLP hidden width; default 4 D (warned).")
    depth: Optional[int] = Field(None, ge=1, le=4096, description="Number of stacked blocks (same as repeat).")
    repeat: Optional[int] = Field(None, ge=1, le=4096, description="Number of stacked blocks (seed spelling).")
    # structure ---------------------------------------------------------------------------------------------------
    mlp: MLPKind = Field("gelu", description="an activation of compiler/activations.py (plain 2-layer MLP), or a "
                                             "gated kind (3 matrices): swiglu | geglu | geglu_tanh | gated_<act>")
    mlp_bias: bool = Field(True, description="Biases in the MLP.")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = Field(1e-5, gt=0)
    norm_offset: float = Field(0.0, description="RMSNorm scale is offset + weight (Gemma: 1).")
    post_norms: bool = Field(False, description="Gemma-3 sandwich: also normalise each branch's output.")
    pre_norms: bool = Field(True, description="Normalise each branch's input (false: OLMo-2, post norms only).")
    attn_bias: list[Literal["q", "k", "v", "o"]] = Field(
        ["q", "k", "v", "o"], description="Projections with a bias (DINOv3: q, v, o; Llama: none).")
    fused_qkv: bool = Field(False, description="One q|k|v projection, rows [q | k | v] (nanoVLM vision, Phi-3).")
    fused_gate_up: bool = Field(False, description="One gate|up projection, rows [gate | up] (Phi-3).")
    causal: bool = Field(False, description="Causal self-attention (decoders).")
    qk_norm: bool = Field(False, description="RMSNorm on q and k per head (Gemma-3, LFM2).")
    qk_norm_scope: Literal["head", "all"] = Field("head", description="q/k norm over each head (Qwen3, Gemma-3) or "
                                                                      "over the whole projection (OLMo-2).")
    attn_scale: Optional[float] = Field(None, gt=0, description="Score scale; default head_dim^-0.5.")
    attn_softcap: Optional[float] = Field(None, gt=0, description="Scores soft-capped, cap * tanh(s / cap), after "
                                                                  "the scale and before the mask (Gemma-2).")
    sliding_window: Optional[int] = Field(None, ge=1, description="Window of sliding_attention layers.")
    layer_types: Optional[list[LayerType]] = Field(None, description="Mixer of each stacked layer.")
    layer_type: LayerType = Field("full_attention", description="Resolved per layer from layer_types.")
    layer_index: int = Field(0, ge=0, description="Resolved: index within the stack.")
    rope: Literal["none", "1d", "2d"] = Field("none", description="Rotary positions: 1d over the sequence, 2d "
                                                                  "over patch-grid coordinates (DINOv3).")
    rope_theta: float = Field(10000.0, gt=0)
    rope_theta_local: Optional[float] = Field(None, gt=0, description="rope_theta of sliding layers (Gemma-3).")
    rope_dim: Optional[int] = Field(None, ge=2, description="Rotated dims per head; default head_dim.")
    rope_rescale_past: Optional[int] = Field(
        None, ge=1, description="nanoVLM's RotaryEmbedding (lm_max_position_embeddings): when a call reaches past "
        "this many positions, every frequency of that call is divided by (last position + 1) / this.")
    rope_scaling: Optional[RopeScaling] = Field(None, description="Rotary scaling (transformers' rope_parameters: "
                                                                  "linear, dynamic, llama3, yarn, longrope); "
                                                                  "resolved: this layer's, complete.")
    rope_scaling_local: Optional[RopeScaling] = Field(None, description="Rotary scaling of sliding layers where it "
                                                                        "differs (Gemma-3: global layers linear, "
                                                                        "sliding ones default).")
    nope_layers: Optional[list[int]] = Field(None, description="Stacked layers without rotary positions (SmolLM3).")
    rope_grid: Optional[list[int]] = Field(None, description="Resolved (2d rope): patch grid [h, w].")
    rope_prefix: int = Field(0, ge=0, description="Resolved (2d rope): leading tokens without rotation.")
    layer_scale: Optional[float] = Field(None, description="LayerScale init (DINOv2 1.0, DINOv3 1e-5).")
    conv_kernel: int = Field(3, ge=1, le=64, description="Short-convolution kernel (conv layers).")
    conv_bias: bool = False
    names: Literal[FAMILIES] = Field("omnic", description="Parameter naming family: " + ", ".join(FAMILIES))

    @property
    def D(self) -> int:
        return self.embed_dim or self.hidden_dim

    @property
    def gated(self) -> bool:
        return self.mlp in GATED

    @property
    def kv(self) -> int:
        return self.num_kv_heads

    @property
    def inner(self) -> int:
        return self.num_heads * self.head_dim

    # derived values the runtimes read (never re-derive) -------------------------------------------------------------
    @property
    def act(self) -> str:
        """The MLP's activation (of the gate, for gated MLPs): a name of compiler/activations.py's table, which each
        runtime's kernels implement."""
        return activation_of(self.mlp)

    @property
    def scale(self) -> float:
        """The attention score scale: attn_scale, default head_dim^-0.5."""
        return self.attn_scale if self.attn_scale is not None else self.head_dim ** -0.5

    @property
    def window(self) -> Optional[int]:
        """The attention window of this layer (sliding layers only); None: every earlier key."""
        return self.sliding_window if self.layer_type == "sliding_attention" else None

    @property
    def theta(self) -> float:
        """The RoPE base of this layer (rope_theta_local on sliding layers where given)."""
        return self.rope_theta_local if (self.window and self.rope_theta_local) else self.rope_theta

    @property
    def rope_dims(self) -> int:
        """Rotated dims per head: rope_dim, default head_dim."""
        return self.rope_dim or self.head_dim


def stack_count(p) -> int:
    if p.depth and p.repeat and p.depth != p.repeat:
        raise ValueError(f"depth {p.depth} and repeat {p.repeat} disagree")
    return p.depth or p.repeat or 1


def resolve_attention(p, ins, diag, default_ff: bool = True):
    """Fill widths and check them: D from the input, heads (D/64), kv heads, head_dim, ff_dim (4 D)."""
    x = ins[0]
    up = {}
    if p.embed_dim and p.hidden_dim and p.embed_dim != p.hidden_dim:
        diag("hidden_dim", f"embed_dim {p.embed_dim} and hidden_dim {p.hidden_dim} disagree")
        return p
    D = p.embed_dim or p.hidden_dim
    if D is None:
        D = x.width
    elif x.width is not None and x.width != D:
        diag("embed_dim" if p.embed_dim else "hidden_dim",
             f"block width {D} does not match its input {x} (width {x.width})",
             f"set it to {x.width}, or project the input to {D} first (a Linear)")
        return p
    up["embed_dim"], up["hidden_dim"] = D, None
    nh = p.num_heads
    if nh is None:
        nh = max(1, D // 64)
        diag("num_heads", f"num_heads not given: using {nh} (width {D} / 64)", "state num_heads", severity="warning")
    kv = p.num_kv_heads or nh
    if nh % kv:
        diag("num_kv_heads", f"num_kv_heads {kv} does not divide num_heads {nh}",
             "grouped-query attention shares each key/value head among num_heads / num_kv_heads query heads")
        return p
    hd = p.head_dim
    if hd is None:
        if D % nh:
            diag("num_heads", f"num_heads {nh} does not divide the width {D}", "or give head_dim explicitly")
            return p
        hd = D // nh
    up.update(num_heads=nh, num_kv_heads=kv, head_dim=hd)
    if p.rope != "none":
        rd = p.rope_dim or hd
        if rd > hd or rd % (4 if p.rope == "2d" else 2):
            diag("rope_dim", f"rope_dim {rd} must be even (a multiple of 4 for 2d) and at most head_dim {hd}")
            return p
        up["rope_dim"] = rd
        scaling = p.rope_scaling
        if p.layer_type == "sliding_attention" and p.rope_scaling_local is not None:
            scaling = p.rope_scaling_local
        if scaling is not None and p.rope_rescale_past is not None:
            diag("rope_rescale_past", "rope_rescale_past and rope_scaling both rescale the rotary frequencies; "
                 "give one", "nanoVLM's rescaling is rope_rescale_past alone; a transformers config is rope_scaling")
            return p
        if p.rope_rescale_past is not None and p.rope != "1d":
            diag("rope_rescale_past", f"rope_rescale_past applies to 1d rope only, not {p.rope!r}")
            return p
        if scaling is not None and p.rope == "1d":
            scaling, errors = resolve_scaling(scaling, rd)
            if scaling.rope_type == "yarn" and p.theta == 1.0:
                errors.append(("rope_type", "yarn needs a rope base other than 1 (its ramp divides by log(theta))"))
            for field, msg in errors:
                diag("rope_scaling", msg, f"set rope_scaling.{field}")
            if errors:
                return p
            up.update(rope_scaling=None if scaling.rope_type == "default" else scaling, rope_scaling_local=None)
        elif scaling is not None:
            diag("rope_scaling", "rope_scaling applies to 1d rope only")
            return p
    elif p.rope_scaling is not None or p.rope_scaling_local is not None:
        up.update(rope_scaling=None, rope_scaling_local=None)      # a NoPE layer of a stack with scaled rope
    if p.rope == "2d":
        if x.grid is None:
            diag("rope", f"2d rope needs tokens from a patch grid; the input {x} has none")
            return p
        up["rope_grid"], up["rope_prefix"] = list(x.grid), x.prefix
    if default_ff and p.ff_dim is None:
        up["ff_dim"] = 4 * D
        diag("ff_dim", f"ff_dim not given: using {4 * D} (4 x width {D})", "state ff_dim", severity="warning")
    if p.fused_gate_up and p.mlp not in GATED:
        diag("fused_gate_up", f"fused_gate_up needs a gated MLP (one of {', '.join(GATED)}), not {p.mlp!r}")
    if p.layer_type == "sliding_attention" and not p.sliding_window:
        diag("sliding_window", "sliding_attention layers need sliding_window")
    return p.model_copy(update=up)


def attention_weights(p, n) -> dict[str, W]:
    """Weights of self-attention under the naming family `n` (a callable role -> name)."""
    D, hd = p.D, p.head_dim
    w: dict[str, W] = {}
    if p.fused_qkv:
        rows = p.inner + 2 * p.kv * hd
        w[n("qkv") + ".weight"] = W((rows, D))
        if "q" in p.attn_bias:
            w[n("qkv") + ".bias"] = W((rows,), "bias")
    else:
        for r, out in (("q", p.inner), ("k", p.kv * hd), ("v", p.kv * hd)):
            w[n(r) + ".weight"] = W((out, D))
            if r in p.attn_bias:
                w[n(r) + ".bias"] = W((out,), "bias")
    w[n("o") + ".weight"] = W((D, p.inner))
    if "o" in p.attn_bias:
        w[n("o") + ".bias"] = W((D,), "bias")
    if p.qk_norm:
        init = "zeros" if p.norm_offset else None
        whole = p.qk_norm_scope == "all"
        w[n("q_norm") + ".weight"] = W((p.inner if whole else hd,), "norm", init=init)
        w[n("k_norm") + ".weight"] = W((p.kv * hd if whole else hd,), "norm", init=init)
    return w


def norm_weights(p, name: str, dim: int) -> dict[str, W]:
    init = "zeros" if p.norm_offset else None
    w = {name + ".weight": W((dim,), "norm", init=init)}
    if p.norm == "layernorm":
        w[name + ".bias"] = W((dim,), "norm", init="zeros")
    return w


def mlp_weights(p, n, D: int, F: int) -> dict[str, W]:
    w: dict[str, W] = {}
    if p.gated and p.fused_gate_up:
        w[n("gate_up") + ".weight"] = W((2 * F, D))
        if p.mlp_bias:
            w[n("gate_up") + ".bias"] = W((2 * F,), "bias")
        w[n("down") + ".weight"] = W((D, F))
        if p.mlp_bias:
            w[n("down") + ".bias"] = W((D,), "bias")
    elif p.gated:
        for r, shape in (("gate", (F, D)), ("up", (F, D)), ("down", (D, F))):
            w[n(r) + ".weight"] = W(shape)
            if p.mlp_bias:
                w[n(r) + ".bias"] = W((shape[0],), "bias")
    else:
        for r, shape in (("fc1", (F, D)), ("fc2", (D, F))):
            w[n(r) + ".weight"] = W(shape)
            if p.mlp_bias:
                w[n(r) + ".bias"] = W((shape[0],), "bias")
    return w


_NORM_ROLES = ("norm1", "norm2", "post_attn_norm", "post_mlp_norm")
_ATTENTION_ROLES = ("q", "k", "v", "qkv", "o", "q_norm", "k_norm")


def declared(p, decl: dict[str, W], roles: dict[str, Optional[str]]) -> dict[str, Optional[str]]:
    """attribute -> role becomes attribute -> the role's dotted name in p's naming family, None where `decl` (the
    layer's weight declaration) has no tensor at that name or under it."""
    names = NAMES[p.names]

    def path(role):
        n = names.get(role) if role else None
        return n if n is not None and (n in decl or any(k.startswith(n + ".") for k in decl)) else None
    return {a: path(r) for a, r in roles.items()}


def attn_pairs(nq: int, nkv: int, causal: bool, window: Optional[int], decode: bool) -> int:
    """Query-key pairs scored. Causal prefill counts the lower triangle with its diagonal."""
    if decode:
        return nq * (min(nkv, window) if window else nkv)
    if not causal:
        return nq * nkv
    if window and window < nq:
        return window * (window + 1) // 2 + (nq - window) * window
    return nq * (nq + 1) // 2


def block_attention_flops(p, x, ctx: Ctx) -> int:
    b = ctx.full(x.shape[0])
    n_q = ctx.n(x.rows()) // max(b, 1)            # query tokens per example (1 when decoding)
    rows = ctx.n(x.rows())
    if rows == 0:
        return 0
    n_kv = ctx.full(x.shape[1])
    window = p.sliding_window if p.layer_type == "sliding_attention" else None
    proj = 2 * rows * p.D * (p.inner + 2 * p.kv * p.head_dim) + 2 * rows * p.inner * p.D
    pairs = attn_pairs(n_q, n_kv, p.causal, window, ctx.mode == "decode")
    return proj + 4 * b * pairs * p.num_heads * p.head_dim


def conv_flops(p, rows: int) -> int:
    D = p.D
    return 2 * rows * D * 3 * D + 2 * rows * D * p.conv_kernel + 2 * rows * D * D


class Block(Op):
    """Shared rules of attention blocks; subclasses change the feed-forward part."""

    slots = (Slot("x", (TOKENS,)),)
    joins_streams = True

    @classmethod
    def in_width(cls, p):
        return p.embed_dim or p.hidden_dim

    @classmethod
    def stack(cls, p) -> int:
        return stack_count(p)

    @classmethod
    def unroll(cls, p, i: int, n: int):
        up = {"layer_index": i}
        if p.layer_types is not None:
            up["layer_type"] = p.layer_types[i]
        if p.nope_layers and i in p.nope_layers:
            up["rope"] = "none"
        return p.model_copy(update=up)

    @classmethod
    def check(cls, p, diag):
        n = stack_count(p)
        if p.layer_types is not None and len(p.layer_types) != n:
            diag("layer_types", f"layer_types has {len(p.layer_types)} entries for {n} layers")
        bad = [i for i in p.nope_layers or [] if not 0 <= i < n]
        if bad:
            diag("nope_layers", f"nope_layers {bad} are not layers of this stack (0..{n - 1})")

    @classmethod
    def shape(cls, p, ins):
        x = ins[0]                                                               # (B, N, D) -> (B, N, D)
        return {"out": replace(x, positioned=True) if p.rope != "none" and not x.positioned else x}

    @classmethod
    def mixer_weights(cls, p, n) -> dict[str, W]:
        if p.layer_type == "conv":
            D = p.D
            w = {n("conv_in") + ".weight": W((3 * D, D)), n("conv") + ".weight": W((D, 1, p.conv_kernel), "conv"),
                 n("conv_out") + ".weight": W((D, D))}
            if p.conv_bias:
                w[n("conv_in") + ".bias"] = W((3 * D,), "bias")
                w[n("conv") + ".bias"] = W((D,), "bias")
                w[n("conv_out") + ".bias"] = W((D,), "bias")
            return w
        return attention_weights(p, n)

    @classmethod
    def ffn_weights(cls, p, n) -> dict[str, W]:
        return mlp_weights(p, n, p.D, p.ff_dim)

    # --- what the runtimes' forward code reads, declared once for both -------------------------------------------
    @classmethod
    def handles(cls, p) -> dict[str, Optional[str]]:
        """attribute -> dotted name of the declared module (a projection, a norm) or tensor (LayerScale, stacked
        experts) a runtime's forward reads under that attribute; None where this layer declares none. Both runtimes
        keep exactly these (`Node.hold`). `conv` is also a module's name: its handle is `dwconv`."""
        mixer = ("conv_in", "conv", "conv_out") if p.layer_type == "conv" else _ATTENTION_ROLES
        h = {("dwconv" if r == "conv" else r): r for r in _NORM_ROLES + mixer + ("ls1", "ls2")}
        if not p.pre_norms:               # OLMo-2: its names for the post norms are Llama's pre-norms' (norm2)
            h.update(norm1=None, norm2=None)
        return declared(p, cls.weights(p), {**h, **cls.ffn_handles(p)})

    @classmethod
    def ffn_handles(cls, p) -> dict[str, Optional[str]]:
        """`handles` of the feed-forward part (attribute -> role): a gated MLP's gate, up, down (gate_up_fused when
        fused), a plain one's fc1, fc2; the others None."""
        roles = {a: None for a in ("gate", "up", "down", "fc1", "fc2", "gate_up_fused")}
        if p.gated and p.fused_gate_up:
            return {**roles, "gate_up_fused": "gate_up", "down": "down"}
        return {**roles, **({r: r for r in ("gate", "up", "down")} if p.gated else {"fc1": "fc1", "fc2": "fc2"})}

    @classmethod
    def weights(cls, p):
        n = lambda role: name_of(p.names, role)  # noqa: E731
        D = p.D
        w = norm_weights(p, n("norm1"), D) if p.pre_norms else {}
        w.update(cls.mixer_weights(p, n))
        if p.post_norms:
            w.update(norm_weights(p, n("post_attn_norm"), D))
        if p.pre_norms:
            w.update(norm_weights(p, n("norm2"), D))
        w.update(cls.ffn_weights(p, n))
        if p.post_norms:
            w.update(norm_weights(p, n("post_mlp_norm"), D))
        if p.layer_scale is not None:
            w[n("ls1")] = W((D,), "other", init=f"const:{p.layer_scale}")
            w[n("ls2")] = W((D,), "other", init=f"const:{p.layer_scale}")
        return w

    @classmethod
    def ffn_flops(cls, p, rows: int) -> int:
        return 2 * rows * p.D * p.ff_dim * (3 if p.gated else 2)

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        x = ins[0]
        rows = ctx.n(x.rows())
        mix = conv_flops(p, rows) if p.layer_type == "conv" else block_attention_flops(p, x, ctx)
        return mix + cls.ffn_flops(p, rows)

    @classmethod
    def decode_state(cls, p, ins):
        if p.layer_type == "conv":
            return (State("conv", "conv", (p.D, p.conv_kernel - 1)),)     # the last K-1 inputs, (B, D, K-1)
        if not p.causal:
            return ()                                                   # encoders cache nothing
        # a token sees the window including itself: between steps the cache keeps window - 1 positions
        cap = p.window - 1 if p.window else None
        one = (p.kv, 1, p.head_dim)                                     # (B, kv, N, hs) per position
        return (State("k", "kv", one, grows=1, axis=1, cap=cap), State("v", "kv", one, grows=1, axis=1, cap=cap))

    @classmethod
    def ffn_width(cls, p) -> int:
        return p.ff_dim * (2 if p.gated else 1)

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        x = ins[0]
        rows, b = ctx.full(x.rows()), ctx.full(x.shape[0])
        n = ctx.full(x.shape[1])
        if p.layer_type == "conv":
            mix = rows * 4 * p.D
        else:
            mix = rows * (2 * p.inner + 2 * p.kv * p.head_dim) + b * p.num_heads * n * n
        return rows * p.D + max(mix, rows * (cls.ffn_width(p) + p.D))

    @classmethod
    def saved(cls, p, ins, outs, ctx):
        """Inputs of every matrix product and nonlinearity, attention probabilities materialised."""
        x = ins[0]
        rows, b = ctx.full(x.rows()), ctx.full(x.shape[0])
        n = ctx.full(x.shape[1])
        if p.layer_type == "conv":
            mix = rows * 6 * p.D
        else:
            mix = rows * (p.D + 2 * p.inner + 2 * p.kv * p.head_dim) + b * p.num_heads * n * n
        return mix + rows * (3 * p.D + cls.ffn_width(p) * 2)


@register
class TransformerBlock(Block):
    name = "TransformerBlock"
    Params = BlockParams
    doc = __doc__

    @classmethod
    def resolve(cls, p, ins, diag):
        p = resolve_attention(p, ins, diag)
        return p
