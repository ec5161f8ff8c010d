"""The shrink table: overrides that make every shipped spec tiny enough to build and run in a test.

    compiled = compiler.compile(path, overrides=SHRINK[path])
    inputs = make_inputs(compiled, seed=0)          # runtime_common/inputs.py: numpy arrays

`SHRINK` maps each spec path (relative to the repository root) to `compile()` overrides. They are written below by
layer id (`_TABLE`: {spec: {"top": {key: value}, "<layer id>": {param: value}}}) and resolved to the
`layers[i].params.<param>` paths `compile()` takes, so a reordered spec still shrinks. Every width, depth, vocabulary
and image size comes down; the structure (wiring, kinds of layers, naming families, tying, grids, prefixes) stays.
The table (what each spec keeps and what it loses):
  omni_lite      32 px image, patch 8 (4x4 grid); ViT 16 wide x 2; resampler 4 latents x 16, 1 layer; vocabulary 64;
                 2 MoE layers of 4 experts (top 2) 8 wide; flow head on 4 latent tokens (2x2 grid), 4 x 4 x 4 values
                 each -> (B, 4, 8, 8); decoder 1 upsampling, 16-code book -> (B, 3, 16, 16)
  oculus         DINOv3 32 px / patch 8 (CLS + 4 registers + 4x4), SigLIP 48 px / patch 8 (6x6) -> resampled 4x4;
                 fused 16 + 8 = 24; projector 24 -> 32 -> 16; LFM2 4 layers (conv, conv, attention, conv) 16 wide,
                 vocabulary 64; heads with 8 hidden, 5 classes, 3 anchors, OCR 4 wide, 6 text positions
  nanovlm/*      64 px image, patch 16 (4x4 grid) -> pixel shuffle 2 (4 tokens) or 1x1 for s=4 at 64 px;
                 ViT 32 x 2; decoder 32 wide x 2 (Gemma: 3 layers, sliding window 4, head 16), vocabulary 64,
                 placeholder id 60
  fvlm_135m      28 px frames, patch 14 (2x2 grid), table 3x3; DINO 16 x 2; LLM 16 x 2, vocabulary 64; query 8
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from runtime_common.inputs import example_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"B": 2, "T": 12, "F": 3}

_NANO_LM = {"depth": 2, "hidden_dim": 32, "num_heads": 4, "num_kv_heads": 2, "ff_dim": 64}
_NANO = {"top": {"inputs[0].shape": ["B", 3, 64, 64]},
         "vision_encoder": {"hidden": 32, "layers": 2, "heads": 2, "ff_dim": 64, "image_size": 64},
         "MP.proj": {"out_features": 32},
         "decoder.token_embedding": {"num_embeddings": 64, "embedding_dim": 32},
         "merge": {"image_token_id": 60},
         "decoder.blocks": _NANO_LM,
         "decoder.head": {"out_features": 64}}

_TABLE: dict[str, dict[str, dict[str, Any]]] = {
    "specs/omni_lite.json": {
        "top": {"inputs[0].shape": ["B", 3, 32, 32]},
        "vision": {"patch_size": 8, "hidden": 16, "layers": 2, "heads": 2, "ff_dim": 32, "image_size": 32},
        "resampler": {"num_latents": 4, "embed_dim": 16, "num_layers": 1, "num_heads": 2, "head_dim": 8, "ff_dim": 32},
        "embed": {"num_embeddings": 64, "embedding_dim": 16},
        "backbone": {"repeat": 2, "num_experts": 4, "top_k": 2, "hidden_dim": 16, "num_heads": 4, "num_kv_heads": 2,
                     "rope_dim": 4, "expert_dim": 8},
        "lm_head": {"in_features": 16, "out_features": 64},
        "latent_tokens": {"stop": 4},
        "flow": {"out_dim": 64, "hidden_dim": 16, "grid": [2, 2], "freq_dim": 16},
        "decoder": {"channels": [8, 4], "codebook_size": 16},
    },
    "specs/oculus.json": {
        "top": {"inputs[0].shape": ["B", 3, 32, 32], "inputs[1].shape": ["B", 3, 48, 48]},
        "dinov3": {"patch_size": 8, "hidden": 16, "layers": 2, "heads": 2, "ff_dim": 32},
        "siglip2": {"patch_size": 8, "hidden": 8, "layers": 2, "heads": 2, "ff_dim": 16, "image_size": 48},
        "siglip_14": {"size": [4, 4]},
        "projector.fc1": {"out_features": 32},
        "projector.fc2": {"out_features": 16},
        "lm.model.embed_tokens": {"num_embeddings": 64, "embedding_dim": 16},
        "lm.model.layers": {"hidden_dim": 16, "depth": 4, "num_heads": 4, "num_kv_heads": 2, "ff_dim": 32,
                            "layer_types": ["conv", "conv", "full_attention", "conv"]},
        "lm.lm_head": {"out_features": 64},
        "heads.segmentation": {"hidden_dim": 8, "num_classes": 5},
        "heads.classification": {"hidden_dim": 8, "num_classes": 5},
        "heads.detection": {"hidden_dim": 8, "num_classes": 5, "num_anchors": 3},
        "heads.ocr": {"hidden_dim": 4, "max_seq_len": 6},
    },
    "specs/nanovlm/original_small.json": _NANO,
    "specs/nanovlm/default.json": {**_NANO, "top": {"inputs[0].shape": ["B", 3, 64, 64]},
                                   "MP.pixel_shuffle": {"factor": 4}},
    "specs/nanovlm/dinov3_gemma.json": {
        "top": {"inputs[0].shape": ["B", 3, 64, 64]},
        "vision_encoder": {"hidden": 16, "layers": 2, "heads": 2, "ff_dim": 32},
        "MP.proj": {"out_features": 32},
        "decoder.model.embed_tokens": {"num_embeddings": 64, "embedding_dim": 32, "scale": 32 ** 0.5},
        "merge": {"image_token_id": 60},
        "decoder.model.layers": {"depth": 3, "hidden_dim": 32, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
                                 "ff_dim": 64, "attn_scale": 0.25, "sliding_window": 4,
                                 "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]},
        "decoder.lm_head": {"out_features": 64},
    },
    "specs/nanovlm/dinov3_gemma_fork.json": {
        "top": {"inputs[0].shape": ["B", 3, 64, 64]},
        "vision_encoder": {"hidden": 16, "layers": 2, "heads": 2, "ff_dim": 32, "image_size": 64},
        "MP.proj": {"out_features": 32},
        "decoder.token_embedding": {"num_embeddings": 64, "embedding_dim": 32},
        "merge": {"image_token_id": 60},
        "decoder.blocks": {"depth": 2, "hidden_dim": 32, "num_heads": 2, "num_kv_heads": 1, "head_dim": 24,
                           "ff_dim": 64},
        "decoder.norm": {},
        "decoder.head": {"out_features": 64},
    },
    "specs/fvlm_135m.json": {
        "top": {"inputs[0].shape": ["B", "F", 3, 28, 28]},
        "fvlm": {"dino": {"hidden": 16, "layers": 2, "heads": 2, "ff_dim": 32, "patch_size": 14, "pos_grid": 3},
                 "llm": {"vocab_size": 64, "hidden": 16, "layers": 2, "heads": 2, "kv_heads": 1, "ff_dim": 32},
                 "query_dim": 8},
    },
}


def _resolve(path: str, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        layers = json.load(f)["layers"]
    index = {layer.get("id"): i for i, layer in enumerate(layers)}
    out = dict(table.get("top", {}))
    for lid, params in table.items():
        if lid == "top":
            continue
        if lid not in index:
            raise KeyError(f"shrink table: {path} has no layer {lid!r}")
        out.update({f"layers[{index[lid]}].params.{k}": v for k, v in params.items()})
    return out


SHRINK: dict[str, dict[str, Any]] = {path: _resolve(path, t) for path, t in _TABLE.items()}
SPECS = sorted(SHRINK)


def make_inputs(compiled, seed: int = 0, env: dict[str, int] = ENV) -> dict[str, np.ndarray]:
    """Valid random inputs for a compiled spec at `env` (runtime_common/inputs.py)."""
    return example_inputs(compiled.graph, env, seed)
