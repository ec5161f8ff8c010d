"""Import fVLM checkpoints (sanps/fVLM-135M `model.safetensors`, or a `FoveatedVLM.state_dict()`) into
specs/fvlm_135m.json, and fVLM variants from their backbones' config.json files.

The spec's FoveatedVLM node (id `fvlm`) declares the checkpoint's own tensor names (compiler/ops/fvlm.py), so the
key map for `runtime_torch.load_state_dict_mapped` only
  1. drops `llm.lm_head.weight` when the head is tied: the node owns no head tensor (it reads
     `llm.model.embed_tokens.weight`); `torch.save` state dicts repeat the tied tensor, and safetensors'
     `save_model` keeps either name (the head's alone stands for the embedding: keymaps.Tied);
  2. accepts the DINOv2 names of transformers 5.x in-memory models (`attention.{q,k,v,o}_proj`) as well as the 4.x
     names the release was saved with (`attention.attention.{query,key,value}`, `attention.output.dense`);
  3. puts everything under the node's id.
Usage (torch side):
    from safetensors.torch import load_file
    model = compiler.compile("specs/fvlm_135m.json").to_torch(init=False)
    runtime_torch.load_state_dict_mapped(model, load_file("model.safetensors"), fvlm_key_map())
Torch-free: names only.
"""
from __future__ import annotations

from typing import Any

from . import keymaps

NODE = "fvlm"


def fvlm_key_map(node: str = NODE, tied: bool = True) -> list:
    """The key map from an fVLM state dict to the spec's names (compiler/importers/keymaps.py `fvlm`: the same
    DINOv2 rules as transformers' DINOv2 checkpoints)."""
    return keymaps.fvlm(node, tied)


def fvlm_params(dino_config: dict[str, Any], llm_config: dict[str, Any], query_dim: int = 384,
                visual_scale: float = 0.14, mode: str = "coarse_fine") -> dict[str, Any]:
    """FoveatedVLM params from a Dinov2Config and a LlamaConfig (config.json dicts); transformers' defaults for
    missing keys (Dinov2: image_size 224, patch 14, mlp_ratio 4, eps 1e-6; Llama: eps 1e-6, theta 1e4, untied)."""
    d, m = dino_config, llm_config
    if d.get("use_swiglu_ffn"):
        raise ValueError("Dinov2 config: use_swiglu_ffn is not supported by FoveatedVLM (plain GELU MLP only)")
    hidden = d.get("hidden_size", 768)
    rope = (m.get("rope_parameters") or {}).get("rope_theta", m.get("rope_theta", 10000.0))
    return {
        "dino": {"hidden": hidden, "layers": d.get("num_hidden_layers", 12), "heads": d.get("num_attention_heads", 12),
                 "ff_dim": int(hidden * d.get("mlp_ratio", 4)), "patch_size": d.get("patch_size", 14),
                 "pos_grid": d.get("image_size", 224) // d.get("patch_size", 14),
                 "norm_eps": d.get("layer_norm_eps", 1e-6), "layer_scale": d.get("layerscale_value", 1.0)},
        "llm": {"vocab_size": m["vocab_size"], "hidden": m["hidden_size"], "layers": m["num_hidden_layers"],
                "heads": m["num_attention_heads"],
                "kv_heads": m.get("num_key_value_heads") or m["num_attention_heads"],
                "ff_dim": m["intermediate_size"], "rope_theta": float(rope),
                "norm_eps": m.get("rms_norm_eps", 1e-6), "tie": bool(m.get("tie_word_embeddings", False))},
        "query_dim": query_dim, "visual_scale": visual_scale, "mode": mode,
    }
