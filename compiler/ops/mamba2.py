"""Mamba2Block (a pre-norm Mamba-2 mixer with its residual) and Mamba2LM (a Mamba-2 language model as one layer).

The mixer is the state-space-duality layer of Dao & Gu 2024 ("Transformers are SSMs"), as transformers 5.x's
`Mamba2Mixer` computes it on its torch path (`torch_forward`; models/mamba2/modeling_mamba2.py). With widths
D (hidden), I = expand D (inner), H heads of size P (H P = I), G groups sharing B and C, N state size, K kernel:

    h          = norm(x)                                                 RMSNorm, eps norm_eps
    z | xBC | dt = mixer.in_proj(h)                                      (B, T, I) | (B, T, I + 2 G N) | (B, T, H)
    xBC        = silu(mixer.conv1d(xBC))                                 depthwise causal, kernel K, over T
    x | B | C  = xBC                                                     (B, T, H, P) | (B, T, G, N) | (B, T, G, N)
    dt         = softplus(dt + mixer.dt_bias);  A = -exp(mixer.A_log)    (B, T, H), (H,)
    S_t        = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T                    per head (P, N); a group's heads share B, C
    y_t        = S_t C_t + mixer.D x_t                                   (B, T, H, P)
    y          = mixer.norm(y * silu(z))                                 RMSNorm over G groups of I / G, eps norm_eps
    out        = x + mixer.out_proj(y)                                   (B, T, D)

Runtimes compute the scan in chunks of `chunk_size` tokens (the SSD algorithm; float32 inside): within a chunk the
quadratic form (scores C_i . B_j, decayed), between chunks the state S carried over. Decoding continues from the
state: per layer (B, H, P, N) for S and (B, I + 2 G N, K - 1) for the last K - 1 convolution inputs, held in the
compute dtype; neither grows with the sequence.

Accounting conventions (the registry's: matrix products only, 2 x multiply-accumulates): in_proj, out_proj, the
depthwise convolution (2 K per channel and token), and the chunked scan's four products per chunk of l tokens:
C B^T per group (2 l^2 N), the decayed scores times x per head (2 l^2 P), the chunk's state x^T B and the carried
state's read-out C S per head (2 l P N each). A prefill of T tokens runs ceil(T / chunk_size) chunks, the last one
shorter; a decoded token is a chunk of one.

Mamba2LM expands into the layers of transformers' `Mamba2ForCausalLM`, whose checkpoint names they reproduce
under the layer's id: backbone.embeddings -> backbone.layers.{i} (Mamba2Block) -> backbone.norm_f (RMSNorm) ->
lm_head (Linear, tied to the embedding when `tie`). Not modelled: `residual_in_fp32` (the residual stream stays in
the compute dtype; fp32 runs are unaffected), `time_step_limit` other than (0, inf) (the importer refuses it).
Initialisation (`build`) as transformers' `Mamba2Mixer.init_mamba2_weights`, bit for bit from the same generator: A_log
= log(1 .. H), dt_bias = softplus^-1(dt) with dt log-uniform in [0.001, 0.1) and at least 1e-4 (its config's
time_step_min / max / floor defaults), D 1; the other tensors by the scheme's defaults. A checkpoint replaces them.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from ..ir import IDS, TOKENS
from ..registry import Op, Params, Slot, State, W, linear_flops, register
from .basic import check_width

#: initialisation as transformers' Mamba2Mixer (its config's time_step_min / max / floor defaults), rules of
#: runtime_common/init.py: A = 1 .. H; dt log-uniform in [0.001, 0.1), at least 1e-4, stored as softplus^-1(dt)
A_LOG_INIT = "log_arange"
DT_BIAS_INIT = "inv_softplus_log_uniform:0.001:0.1:0.0001"


class SSMParams(Params):
    """The mixer's settings, shared by Mamba2Block and Mamba2LM."""
    expand: int = Field(2, ge=1, le=64, description="Inner width I = expand x D.")
    num_heads: Optional[int] = Field(None, ge=1, le=65536, description="SSM heads H; default I / head_dim.")
    head_dim: int = Field(64, ge=1, le=65536, description="Head size P (H x P = I).")
    state_size: int = Field(128, ge=1, le=65536, description="State size N per head.")
    n_groups: int = Field(8, ge=1, le=65536, description="Groups G sharing B and C (divides H).")
    conv_kernel: int = Field(4, ge=1, le=64, description="Depthwise causal convolution kernel K.")
    use_bias: bool = Field(False, description="Biases in in_proj and out_proj.")
    use_conv_bias: bool = Field(True, description="Bias in the convolution.")
    norm_eps: float = Field(1e-5, gt=0, description="eps of the block's RMSNorm and of the mixer's gated norm "
                                                    "(layer_norm_epsilon; Mamba2LM: also of norm_f).")
    chunk_size: int = Field(256, ge=1, le=1_000_000, description="Tokens per chunk of the scan (speed and memory "
                                                                 "only; the result does not depend on it).")


class Mamba2Params(SSMParams):
    hidden_size: Optional[int] = Field(None, ge=1, le=1_000_000, description="Width D; inferred from the input.")
    depth: int = Field(1, ge=1, le=4096, description="Number of stacked blocks.")

    @property
    def D(self) -> int:
        return self.hidden_size

    @property
    def inner(self) -> int:
        return self.expand * self.hidden_size

    @property
    def conv_dim(self) -> int:
        """Channels of the convolution: x, B and C."""
        return self.inner + 2 * self.n_groups * self.state_size

    @property
    def proj_dim(self) -> int:
        """Outputs of in_proj: z, x | B | C, dt."""
        return self.inner + self.conv_dim + self.num_heads


def chunk_lengths(t: int, chunk: int) -> list[int]:
    """Lengths of the scan's chunks over t tokens: full chunks, then the rest."""
    return [chunk] * (t // chunk) + ([t % chunk] if t % chunk else [])


def scan_flops(p, b: int, t: int) -> int:
    """FLOPs of the chunked scan over t tokens of b sequences (the products of the module docstring)."""
    H, P, N, G = p.num_heads, p.head_dim, p.state_size, p.n_groups
    return b * sum(2 * l * l * (G * N + H * P) + 4 * l * H * P * N for l in chunk_lengths(t, p.chunk_size))


@register
class Mamba2Block(Op):
    name = "Mamba2Block"
    Params = Mamba2Params
    slots = (Slot("x", (TOKENS,)),)
    doc = "x + Mamba-2 mixer(RMSNorm(x)): a selective state-space layer (SSD), (B, T, D) -> (B, T, D), stateful."

    @classmethod
    def in_width(cls, p):
        return p.hidden_size

    @classmethod
    def stack(cls, p) -> int:
        return p.depth

    @classmethod
    def resolve(cls, p, ins, diag):
        x = ins[0]
        up = {}
        if p.hidden_size is None:
            up["hidden_size"] = x.width
        else:
            check_width(diag, x, p.hidden_size, "hidden_size")
        D = up.get("hidden_size", p.hidden_size)
        if D is None:
            return p
        inner = p.expand * D
        H = p.num_heads
        if H is None:
            if inner % p.head_dim:
                diag("head_dim", f"head_dim {p.head_dim} does not divide the inner width {inner} (expand {p.expand} "
                                 f"x hidden {D})", "set head_dim to a divisor of it, or num_heads")
                return p
            H = inner // p.head_dim
        elif H * p.head_dim != inner:
            diag("num_heads", f"num_heads {H} x head_dim {p.head_dim} = {H * p.head_dim} must equal the inner width "
                              f"{inner} (expand {p.expand} x hidden {D})", f"set num_heads to {inner // p.head_dim}"
                 if inner % p.head_dim == 0 else "change head_dim or expand")
            return p
        if H % p.n_groups:
            diag("n_groups", f"n_groups {p.n_groups} does not divide num_heads {H}",
                 "each group's B and C serve num_heads / n_groups heads")
            return p
        up["num_heads"] = H
        return p.model_copy(update=up)

    @classmethod
    def shape(cls, p, ins):
        return {"out": ins[0]}                                               # (B, T, D) -> (B, T, D)

    @classmethod
    def weights(cls, p):
        D, I, H = p.D, p.inner, p.num_heads
        w = {"norm.weight": W((D,), "norm"),
             "mixer.in_proj.weight": W((p.proj_dim, D))}
        if p.use_bias:
            w["mixer.in_proj.bias"] = W((p.proj_dim,), "bias")
        w["mixer.conv1d.weight"] = W((p.conv_dim, 1, p.conv_kernel), "conv")
        if p.use_conv_bias:
            w["mixer.conv1d.bias"] = W((p.conv_dim,), "bias")
        w.update({"mixer.dt_bias": W((H,), "other", init=DT_BIAS_INIT),
                  "mixer.A_log": W((H,), "other", init=A_LOG_INIT),
                  "mixer.D": W((H,), "other", init="ones"),
                  "mixer.norm.weight": W((I,), "norm"),
                  "mixer.out_proj.weight": W((D, I))})
        if p.use_bias:
            w["mixer.out_proj.bias"] = W((D,), "bias")
        return w

    @classmethod
    def flops(cls, p, ins, outs, ctx):
        x = ins[0]
        rows, b, t = ctx.n(x.rows()), ctx.full(x.shape[0]), ctx.n(x.shape[1])
        return (linear_flops(rows, p.D, p.proj_dim) + 2 * rows * p.conv_dim * p.conv_kernel + scan_flops(p, b, t)
                + linear_flops(rows, p.inner, p.D))

    @classmethod
    def decode_state(cls, p, ins):
        """Per example: the SSM state (H, P, N) and the convolution's last K - 1 inputs (I + 2 G N, K - 1); both
        replaced at each call, neither grows."""
        return (State("ssm", "ssm", (p.num_heads, p.head_dim, p.state_size)),
                State("conv", "conv", (p.conv_dim, p.conv_kernel - 1)))

    @classmethod
    def workspace(cls, p, ins, outs, ctx):
        """in_proj's output, the convolved x | B | C, the scan's output, and one chunk's (B, H, l, l) scores and
        decays."""
        x = ins[0]
        rows, b, t = ctx.full(x.rows()), ctx.full(x.shape[0]), ctx.full(x.shape[1])
        l = min(t, p.chunk_size)
        return rows * (p.proj_dim + p.conv_dim + p.inner) + 2 * b * p.num_heads * l * l

    @classmethod
    def saved(cls, p, ins, outs, ctx):
        """Inputs of every product and nonlinearity: the normed input, in_proj's output, the convolution's input
        and output, the scan's output, its gated and normed forms; per chunk the (B, H, l, l) decays and scores
        and the state it starts from."""
        x = ins[0]
        rows, b, t = ctx.full(x.rows()), ctx.full(x.shape[0]), ctx.full(x.shape[1])
        chunks = chunk_lengths(t, p.chunk_size)
        H = p.num_heads
        per_chunk = sum(2 * H * l * l for l in chunks) + len(chunks) * H * p.head_dim * p.state_size
        return rows * (p.D + p.proj_dim + 2 * p.conv_dim + 3 * p.inner) + b * per_chunk


# ---------------------------------------------------------------------------------------------------------------------
class Mamba2LMParams(SSMParams):
    vocab_size: int = Field(ge=1, le=100_000_000, description="Vocabulary V (the published configs pad it to a "
                                                              "multiple of 16).")
    hidden: int = Field(ge=1, le=1_000_000, description="Width D.")
    layers: int = Field(ge=1, le=4096, description="Number of Mamba2Blocks.")
    tie: bool = Field(False, description="lm_head shares the embedding matrix (tie_word_embeddings).")


@register
class Mamba2LM(Op):
    name = "Mamba2LM"
    Params = Mamba2LMParams
    slots = (Slot("ids", (IDS,)),)
    composite = True
    doc = "Mamba-2 language model (transformers' Mamba2ForCausalLM names): ids (B, T) -> logits (B, T, V)."

    @classmethod
    def expand(cls, p, layer):
        block = {k: getattr(p, k) for k in SSMParams.model_fields if k != "note" and getattr(p, k) is not None}
        block.update(hidden_size=p.hidden, depth=p.layers)
        head = dict(in_features=p.hidden, out_features=p.vocab_size, bias=False, role="head")
        if p.tie:
            head["tie"] = "backbone.embeddings"
        return [
            {"id": "backbone.embeddings", "type": "Embedding",
             "params": {"num_embeddings": p.vocab_size, "embedding_dim": p.hidden}, "inputs": ["$0"]},
            {"id": "backbone.layers", "type": "Mamba2Block", "params": block, "inputs": ["backbone.embeddings"]},
            {"id": "backbone.norm_f", "type": "RMSNorm", "params": {"dim": p.hidden, "eps": p.norm_eps},
             "inputs": ["backbone.layers"]},
            {"id": "lm_head", "type": "Linear", "params": head, "inputs": ["backbone.norm_f"]},
        ]
