"""Import nanoVLM models: a VLMConfig (the hub's config.json) -> an omnic spec, and the key map of its checkpoints.

nanoVLM (huggingface/nanoVLM, `models/config.py`, `models/vision_language_model.py`) names its modules
`vision_encoder.*` (SigLIP ViT: patch_embedding.{conv, position_embedding}, blocks.{i}.{ln1, attn.qkv_proj,
attn.out_proj, ln2, mlp.fc1, mlp.fc2}, layer_norm), `MP.proj` (Linear without bias after the pixel shuffle) and
`decoder.*` (Llama: token_embedding, blocks.{i}.{norm1, attn.{q,k,v,out}_proj, norm2, mlp.{gate,up,down}_proj},
norm, head tied to token_embedding). The specs in specs/nanovlm/ use exactly these names, so a checkpoint loads
with the identity map; `nanovlm_key_map()` drops only what is not a parameter of the published modules (its
persistent rotary buffer `decoder.rotary_embd.inv_freq`); runtime_torch.load_state_dict_mapped reports every
missing / unexpected / mis-shaped tensor. The tied head may be present (torch.save) or absent (safetensors).
The vocabulary: the config's `lm_vocab_size` where it has one (huggingface/nanoVLM 4e0c096: lm_base_vocab_size +
extra_token_amount, 66 tokens, not rounded), else the older rule, base + extra_token_amount (17) rounded up to a
multiple of 128. The image placeholder `<|image|>` is the first added token, id = lm_base_vocab_size (its embedding
rows are overwritten, in order, by the projected image tokens: MergeImageTokens). `lm_max_position_embeddings`
(8192) becomes the spec's context and the decoder's `rope_rescale_past`: past it nanoVLM's RotaryEmbedding divides
every frequency of the call by (longest position + 1) / lm_max_position_embeddings (upstream 4e0c096 and the fork).
`spec_from_nanovlm_config(cfg)` covers the SigLIP + Llama architectures (original_small, default); the DINOv3 +
Gemma-3 preset is specs/nanovlm/dinov3_gemma.json (its ViT and decoder keep transformers' names, so their
pretrained checkpoints load with the prefixes `vision_encoder.` and `decoder.`).
Torch-free.
"""
from __future__ import annotations

from typing import Any, Optional

from . import keymaps

def round_up(x: int, n: int = 128) -> int:
    return (x + n - 1) // n * n


def vocab_size(base: int, extra: int = 17) -> int:
    """nanoVLM's embedding rows: base vocabulary + extra tokens, rounded up to a multiple of 128."""
    return round_up(base + extra)


def nanovlm_key_map() -> list[tuple[str, Optional[str]]]:
    """(regex, replacement) renames from a nanoVLM state dict to the spec's names (compiler/importers/keymaps.py
    `nanovlm`): identity on the three modules; anything else, and the persistent rotary `inv_freq`, dropped."""
    return keymaps.key_map("nanovlm")


# VLMConfig defaults (nanoVLM models/config.py) for the keys read below
DEFAULTS: dict[str, Any] = dict(
    vit_architecture="siglip", vit_hidden_dim=768, vit_inter_dim=3072, vit_patch_size=16, vit_img_size=512,
    vit_n_heads=12, vit_n_blocks=12, vit_ln_eps=1e-6, vit_cls_flag=False, lm_architecture="llama",
    lm_hidden_dim=960, lm_inter_dim=2560, lm_rms_eps=1e-5, lm_re_base=100000, lm_base_vocab_size=49152,
    extra_token_amount=17, lm_n_heads=15, lm_n_kv_heads=5, lm_n_blocks=32, lm_tie_weights=True,
    mp_pixel_shuffle_factor=4, vit_num_registers=0, vit_use_swiglu=False, vit_layer_scale=False,
    vit_layer_scale_init=1.0, lm_head_dim=None, mp_handle_special_tokens=False)


def _vision(c: dict) -> dict:
    """The ViT as nanoVLM's code computes it. `dinov3` (the amazingvince/nanoVLM fork): CLS + registers, SwiGLU and
    LayerScale per the config, and no position information at all: the fork builds no position table for dinov3
    and its attention never applies the RoPE it computes (ViTMultiHeadAttention has no `use_dinov3_rope`)."""
    p = {"family": "nanovlm", "patch_size": c["vit_patch_size"], "hidden": c["vit_hidden_dim"],
         "layers": c["vit_n_blocks"], "heads": c["vit_n_heads"], "ff_dim": c["vit_inter_dim"],
         "image_size": c["vit_img_size"], "norm_eps": c["vit_ln_eps"]}
    if c["vit_architecture"] == "siglip":
        if c["vit_cls_flag"]:
            raise ValueError("nanoVLM config: vit_cls_flag=True is not supported with vit_architecture 'siglip' "
                             "(SigLIP has no CLS token; supported: false)")
        return p
    if c["vit_architecture"] != "dinov3":
        raise ValueError(f"nanoVLM config: vit_architecture={c['vit_architecture']!r} is not supported "
                         "(supported: siglip, dinov3)")
    p.update(cls=bool(c["vit_cls_flag"]), registers=int(c["vit_num_registers"]), positions="none")
    if c["vit_use_swiglu"]:
        p["mlp"] = "swiglu"
    if c["vit_layer_scale"]:
        p["layer_scale"] = float(c["vit_layer_scale_init"])
    return p


def spec_from_nanovlm_config(cfg: dict[str, Any], name: str = "nanoVLM") -> dict[str, Any]:
    """The spec of a nanoVLM (explicit ids = nanoVLM's module names; inputs image and input_ids): SigLIP + Llama
    (huggingface/nanoVLM), and the fork's DINOv3 + "Gemma" (a Llama-style decoder with the config's head_dim)."""
    c = {**DEFAULTS, **cfg}
    if c["lm_architecture"] not in ("llama", "gemma"):
        raise ValueError(f"nanoVLM config: lm_architecture={c['lm_architecture']!r} is not supported "
                         "(supported: llama, gemma)")
    V = int(cfg["lm_vocab_size"]) if "lm_vocab_size" in cfg else vocab_size(c["lm_base_vocab_size"],
                                                                              c["extra_token_amount"])
    if c.get("lm_attn_scaling", 1.0) != 1.0:
        raise ValueError(f"nanoVLM config: lm_attn_scaling={c['lm_attn_scaling']!r} is not supported (omnic's RoPE "
                         "does not scale cos and sin; supported: 1.0)")
    vision = _vision(c)
    prefix = int(vision.get("cls", False)) + vision.get("registers", 0)
    if prefix and not c["mp_handle_special_tokens"]:
        raise ValueError("nanoVLM config: mp_handle_special_tokens=False with CLS/register tokens is not supported "
                         "(nanoVLM's pixel shuffle needs a square token count; supported: true)")
    H, s, S = c["lm_hidden_dim"], c["mp_pixel_shuffle_factor"], c["vit_img_size"]
    extra = {"context": int(cfg["lm_max_position_embeddings"])} if "lm_max_position_embeddings" in cfg else {}
    block = {"depth": c["lm_n_blocks"], "hidden_dim": H, "num_heads": c["lm_n_heads"],
             "num_kv_heads": c["lm_n_kv_heads"], "ff_dim": c["lm_inter_dim"], "mlp": "swiglu", "mlp_bias": False,
             "norm": "rmsnorm", "norm_eps": c["lm_rms_eps"], "attn_bias": [], "causal": True, "rope": "1d",
             "rope_theta": float(c["lm_re_base"]), "names": "nanovlm_lm"}
    if "lm_max_position_embeddings" in cfg:
        block["rope_rescale_past"] = int(cfg["lm_max_position_embeddings"])
    if c["lm_head_dim"] is not None and c["lm_head_dim"] != H // c["lm_n_heads"]:
        block["head_dim"] = int(c["lm_head_dim"])
    shuffle_in = "vision_encoder"
    patches = []
    if prefix:
        patches = [{"id": "MP.patches", "type": "Select", "inputs": ["vision_encoder"],
                    "params": {"tokens": "patches"}}]
        shuffle_in = "MP.patches"
    return {
        "$schema": "../schema.json", "name": name, **extra,
        "inputs": [{"name": "image", "kind": "image", "shape": ["B", 3, S, S]},
                   {"name": "input_ids", "kind": "ids", "shape": ["B", "T"],
                    "note": f"{(S // c['vit_patch_size'] // s) ** 2} image placeholders (id {c['lm_base_vocab_size']}) "
                            "per example"}],
        "layers": [
            {"id": "vision_encoder", "type": "VisionEncoder", "inputs": ["image"], "params": vision},
            *patches,
            {"id": "MP.pixel_shuffle", "type": "PixelShuffle", "inputs": [shuffle_in], "params": {"factor": s}},
            {"id": "MP.proj", "type": "Linear", "inputs": ["MP.pixel_shuffle"],
             "params": {"out_features": H, "bias": False}},
            {"id": "decoder.token_embedding", "type": "Embedding", "inputs": ["input_ids"],
             "params": {"num_embeddings": V, "embedding_dim": H}},
            {"id": "merge", "type": "MergeImageTokens", "inputs": ["decoder.token_embedding", "MP.proj", "input_ids"],
             "params": {"image_token_id": c["lm_base_vocab_size"]}},
            {"id": "decoder.blocks", "type": "TransformerBlock", "inputs": ["merge"], "params": block},
            {"id": "decoder.norm", "type": "RMSNorm", "inputs": ["decoder.blocks"], "params": {"eps": c["lm_rms_eps"]}},
            {"id": "decoder.head", "type": "Linear", "inputs": ["decoder.norm"],
             "params": {"out_features": V, "bias": False,
                        **({"tie": "decoder.token_embedding"} if c["lm_tie_weights"] else {"role": "head"})}},
        ],
        "outputs": ["decoder.head"],
    }
