"""VisionEncoder: a ViT as one layer, expanded to PatchEmbed -> TransformerBlock x L -> LayerNorm [-> pooling head].

The families differ in values only; each is a row of `PRESETS` (sources: transformers' modeling_siglip,
modeling_siglip2, modeling_dinov2, modeling_dinov3_vit; nanoVLM's vision_transformer.py):

  family   patch   extra tokens      positions              block names   MLP        eps    LayerScale  ids
  siglip   conv    -                 learned (N, D)         siglip        gelu_tanh  1e-6   -           vision_model.*
  siglip2  linear  -                 learned, bilinear AA   siglip        gelu_tanh  1e-6   -           vision_model.*
  dinov2   conv    CLS (+ mask_tok)  learned incl. CLS row  dinov2        gelu       1e-6   1.0         embeddings ...
  dinov3   conv    CLS, registers    2-D RoPE in blocks     dinov3        gelu/swiglu 1e-5  1.0         embeddings ...
  nanovlm  conv    -                 learned (1, N, D)      nanovlm_vit   gelu_tanh  1e-6   -           patch_embedding

Node ids reproduce the checkpoints' names under the layer's own id (`IDS`): a SigLIP encoder with id `vision` has
the tensor `vision.vision_model.encoder.layers.3.self_attn.q_proj.weight`, which is the hub checkpoint's
`vision_model.encoder.layers.3.self_attn.q_proj.weight` with the prefix `vision.`.
Any preset value can be overridden by the layer's params (mlp, norm_eps, layer_scale, attn_bias, registers, ...).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..registry import Op, Params, register
from ..activations import MLPKind

# per family: sub-layer ids (relative to the encoder's id), naming families, and the block/embedding defaults
PRESETS: dict[str, dict] = {
    "siglip": dict(root="vision_model.", embed="embeddings", blocks="encoder.layers", norm="post_layernorm",
                   head="head", embed_names="siglip", block_names="siglip", pool_names="siglip", patch_kind="conv",
                   positions="learned", pos_cls=False, interpolate="bicubic", antialias=False, cls=False,
                   registers=0, mask_token=False, mlp="gelu_tanh", norm_eps=1e-6, layer_scale=None,
                   attn_bias=["q", "k", "v", "o"], rope_theta=None),
    "dinov2": dict(root="", embed="embeddings", blocks="encoder.layer", norm="layernorm", head=None,
                   embed_names="dinov2", block_names="dinov2", pool_names=None, patch_kind="conv",
                   positions="learned", pos_cls=True, interpolate="bicubic", antialias=False, cls=True,
                   registers=0, mask_token=True, mlp="gelu", norm_eps=1e-6, layer_scale=1.0,
                   attn_bias=["q", "k", "v", "o"], rope_theta=None),
    "dinov3": dict(root="", embed="embeddings", blocks="layer", norm="norm", head=None,
                   embed_names="dinov3", block_names="dinov3", pool_names=None, patch_kind="conv",
                   positions="rope2d", pos_cls=False, interpolate="bicubic", antialias=False, cls=True,
                   registers=4, mask_token=True, mlp="gelu", norm_eps=1e-5, layer_scale=1.0,
                   attn_bias=["q", "v", "o"], rope_theta=100.0),
    "nanovlm": dict(root="", embed="patch_embedding", blocks="blocks", norm="layer_norm", head=None,
                    embed_names="nanovlm", block_names="nanovlm_vit", pool_names=None, patch_kind="conv",
                    positions="learned", pos_cls=False, interpolate="bicubic", antialias=False, cls=False,
                    registers=0, mask_token=False, mlp="gelu_tanh", norm_eps=1e-6, layer_scale=None,
                    attn_bias=["q", "k", "v", "o"], rope_theta=None, fused_qkv=True),
}
PRESETS["siglip2"] = dict(PRESETS["siglip"], embed_names="siglip2", patch_kind="linear", interpolate="bilinear",
                          antialias=True)
FAMILY = Literal["siglip", "siglip2", "dinov2", "dinov3", "nanovlm"]


class VisionEncoderParams(Params):
    family: FAMILY = Field(description="Preset (names, norms, MLP, tokens, positions): " + ", ".join(PRESETS))
    patch_size: int = Field(ge=1, le=1024, description="Patch side P.")
    hidden: int = Field(ge=1, le=1_000_000, description="Width D.")
    layers: int = Field(ge=1, le=4096, description="Number of transformer blocks.")
    heads: int = Field(ge=1, le=4096, description="Attention heads.")
    ff_dim: Optional[int] = Field(None, ge=1, le=10_000_000, description="MLP hidden width; default 4 D.")
    image_size: Optional[int] = Field(None, ge=1, le=100_000, description="Training resolution: the learned "
                                      "position table covers (image_size / P)^2 patches; inputs of another size "
                                      "get it resized. Default: the input's size.")
    channels: Optional[int] = Field(None, ge=1, le=4096, description="Image channels; inferred from the input.")
    cls: Optional[bool] = Field(None, description="CLS token (family default).")
    registers: Optional[int] = Field(None, ge=0, le=1024, description="Register tokens (family default).")
    mask_token: Optional[bool] = Field(None, description="Declare the unused mask_token (family default).")
    positions: Optional[Literal["learned", "rope2d", "none"]] = Field(
        None, description="learned table, 2-D RoPE in the blocks, or none (family default).")
    patch_kind: Optional[Literal["conv", "linear"]] = Field(None, description="Patch projection (family default).")
    mlp: Optional[MLPKind] = Field(None, description="Block MLP kind (family default; DINOv3 ViT-S/16+: swiglu).")
    mlp_bias: bool = Field(True, description="Biases in the block MLPs (all five families have them).")
    norm_eps: Optional[float] = Field(None, gt=0, description="LayerNorm eps (family default).")
    layer_scale: Optional[float] = Field(None, description="LayerScale init (family default; DINOv2/v3 1.0).")
    attn_bias: Optional[list[Literal["q", "k", "v", "o"]]] = Field(None, description="Biased projections.")
    rope_theta: Optional[float] = Field(None, gt=0, description="2-D RoPE base (DINOv3: 100).")
    pooling_head: bool = Field(False, description="Add SigLIP's attention-pooling head (the output is (B, D)).")
    final_norm: bool = Field(True, description="The final LayerNorm over all tokens.")

    def get(self, key: str):
        v = getattr(self, key, None)
        return PRESETS[self.family][key] if v is None else v


@register
class VisionEncoder(Op):
    name = "VisionEncoder"
    Params = VisionEncoderParams
    composite = True
    doc = __doc__

    @classmethod
    def check(cls, p, diag):
        pre = PRESETS[p.family]
        if p.hidden % p.heads:
            diag("heads", f"heads {p.heads} does not divide hidden {p.hidden}")
        elif p.get("positions") == "rope2d" and (p.hidden // p.heads) % 4:
            diag("heads", f"2-D RoPE needs a head size divisible by 4, got {p.hidden // p.heads}")
        if p.image_size is not None and p.image_size < p.patch_size:
            diag("image_size", f"image_size {p.image_size} is smaller than the patch {p.patch_size}")
        if p.pooling_head and pre["pool_names"] is None:
            diag("pooling_head", f"family '{p.family}' has no attention-pooling head", "use siglip or siglip2")
        if p.get("positions") == "rope2d" and p.family != "dinov3":
            diag("positions", f"2-D RoPE uses DINOv3's block names; family '{p.family}' has none", "use dinov3")

    @classmethod
    def expand(cls, p, layer):
        pre = PRESETS[p.family]
        root = pre["root"]
        D = p.hidden
        ff = p.ff_dim or 4 * D
        eps = p.get("norm_eps")
        positions = p.get("positions")
        cls_tok = p.get("cls")
        embed = {"embed_dim": D, "patch_size": p.patch_size, "kind": p.get("patch_kind"),
                 "positions": "learned" if positions == "learned" else "none",
                 "cls_token": cls_tok, "registers": p.get("registers"), "mask_token": p.get("mask_token"),
                 "names": pre["embed_names"]}
        if p.channels is not None:
            embed["in_channels"] = p.channels
        if positions == "learned":
            embed.update(pos_cls=pre["pos_cls"] and cls_tok, interpolate=pre["interpolate"],
                         antialias=pre["antialias"])
            if p.image_size is not None:
                n = p.image_size // p.patch_size
                embed["pos_grid"] = [n, n]
        block = {"depth": p.layers, "embed_dim": D, "num_heads": p.heads, "ff_dim": ff, "mlp": p.get("mlp"),
                 "mlp_bias": p.mlp_bias, "norm": "layernorm", "norm_eps": eps, "attn_bias": p.get("attn_bias"),
                 "causal": False, "names": pre["block_names"]}
        if pre.get("fused_qkv"):
            block["fused_qkv"] = True
        if p.get("layer_scale") is not None:
            block["layer_scale"] = p.get("layer_scale")
        if positions == "rope2d":
            block.update(rope="2d", rope_theta=p.get("rope_theta") or 100.0)
        e_id, b_id = root + pre["embed"], root + pre["blocks"]
        subs = [{"id": e_id, "type": "PatchEmbed", "params": embed, "inputs": ["$0"]},
                {"id": b_id, "type": "TransformerBlock", "params": block, "inputs": [e_id]}]
        last = b_id
        if p.final_norm:
            subs.append({"id": root + pre["norm"], "type": "LayerNorm", "params": {"eps": eps},
                         "inputs": [last]})
            last = root + pre["norm"]
        if p.pooling_head:
            subs.append({"id": root + pre["head"], "type": "AttentionPoolingHead",
                         "params": {"num_heads": p.heads, "ff_dim": ff, "mlp": "gelu_tanh" if p.get("mlp") ==
                                    "gelu_tanh" else "gelu", "norm_eps": eps, "names": pre["pool_names"]},
                         "inputs": [last]})
        return subs
