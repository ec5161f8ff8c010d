"""Tiny hand-made specs, per op, for the registry-wide runtime tests (tests/test_torch_runtime.py).

Add your op: `OP_EXAMPLES["MyOp"] = spec(...)`, or a list of specs for its variants. Each spec must contain the op,
compile without errors, and stay tiny (widths <= 16) so the whole table runs in seconds. The tests build each one,
check parameter count and names against the compiler, and run it with B=2, T=5, F=3 on the inputs of
`runtime_common/inputs.py` (ids valid by the consumers' declarations). `CASES` lists every (op, index, spec), the
parametrisation of the registry-wide tests (tests/conftest.py gives it to any test taking `op_case`).
"""
from __future__ import annotations

ENV = {"B": 2, "T": 5, "F": 3}


def spec(layers: list, inputs: list, name: str = "example", outputs: list | None = None) -> dict:
    s = {"name": name, "inputs": inputs, "layers": layers}
    if outputs:
        s["outputs"] = outputs
    return s


def tokens(d: int, n="T", name: str = "x") -> dict:
    return {"name": name, "kind": "tokens", "shape": ["B", n, d]}


def vector(d: int, name: str = "x") -> dict:
    return {"name": name, "kind": "vector", "shape": ["B", d]}


def image(c: int, h: int, w: int, name: str = "image") -> dict:
    return {"name": name, "kind": "image", "shape": ["B", c, h, w]}


def ids(name: str = "input_ids") -> dict:
    return {"name": name, "kind": "ids", "shape": ["B", "T"]}


def layer(type_: str, params: dict | None = None, **kw) -> dict:
    return {"type": type_, "params": params or {}, **kw}


# a patch grid: (B, 3, 8, 8) -> Conv2d patch 2 -> (B, 8, 4, 4) -> Flatten -> (B, 16, 8) with grid (4, 4)
_PATCHES = [layer("Conv2d", {"out_channels": 8, "kernel_size": 2, "stride": 2}, id="patch"),
            layer("Flatten", id="flat")]

OP_EXAMPLES: dict[str, dict | list[dict]] = {
    "Linear": [
        spec([layer("Linear", {"out_features": 4})], [tokens(8)]),
        spec([layer("Linear", {"out_features": 6, "bias": False})], [vector(8)]),
        spec([layer("Embedding", {"num_embeddings": 11, "embedding_dim": 8}, id="emb"),
              layer("Linear", {"out_features": 11, "bias": False, "tie": "emb"}, id="lm_head")], [ids()]),
    ],
    "Embedding": [
        spec([layer("Embedding", {"num_embeddings": 13, "embedding_dim": 8})], [ids()]),
        spec([layer("Embedding", {"num_embeddings": 13, "embedding_dim": 16, "scale": 4.0})], [ids()]),
    ],
    "Conv2d": [
        spec([layer("Conv2d", {"out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1})], [image(3, 8, 8)]),
        spec([layer("Conv2d", {"out_channels": 6, "kernel_size": 3, "groups": 2, "bias": False})], [image(4, 6, 7)]),
    ],
    "LayerNorm": [
        spec([layer("LayerNorm", {"eps": 1e-6})], [tokens(8)]),
        spec([layer("LayerNorm", {"bias": False})], [vector(8)]),
    ],
    "RMSNorm": [
        spec([layer("RMSNorm")], [tokens(8)]),
        spec([layer("RMSNorm", {"offset": 1.0, "eps": 1e-6})], [tokens(8)]),
    ],
    "Activation": [spec([layer("Activation", {"fn": fn})], [tokens(8)])
                   for fn in ("gelu", "gelu_tanh", "silu", "relu", "tanh", "sigmoid", "identity")]
                  + [spec([layer("Activation", {"fn": "silu"})], [image(3, 4, 4)])],
    "Flatten": spec([layer("Flatten")], [image(4, 3, 5)]),
    "Concat": [
        spec([layer("Concat", {"axis": "sequence"}, inputs=["a", "b"])], [tokens(8, name="a"), tokens(8, 3, "b")]),
        spec([layer("Concat", {"axis": "channels"}, inputs=["a", "b"])], [tokens(8, name="a"), tokens(4, name="b")]),
        spec([layer("Concat", {"axis": "channels"}, inputs=["a", "b"])],
             [image(3, 4, 4, "a"), image(2, 4, 4, "b")]),
    ],
    "Select": [
        spec([layer("Select", {"tokens": "range", "start": 1, "stop": 4})], [tokens(8, 6)]),
        spec(_PATCHES + [layer("Select", {"tokens": "patches"})], [image(3, 8, 8)]),
    ],
    "Reshape": [
        spec(_PATCHES + [layer("Reshape", {"to": "map"})], [image(3, 8, 8)]),
        spec(_PATCHES + [layer("Reshape", {"to": "map", "channels": 2})], [image(3, 8, 8)]),
        spec(_PATCHES + [layer("Reshape", {"to": "grid_tokens"})], [image(3, 8, 8)]),
        spec([layer("Reshape", {"to": "tokens"})], [image(4, 3, 5)]),
    ],
}

# --- vision (compiler/ops/vision.py) ----------------------------------------------------------------------------------
def _embed(d: int = 8, **kw) -> dict:
    return layer("PatchEmbed", {"embed_dim": d, "patch_size": 2, **kw}, id="embed")


OP_EXAMPLES.update({
    "PatchEmbed": [
        spec([_embed()], [image(3, 8, 8)]),
        # SigLIP2: Linear over (py, px, c) patches; the 2x2 table resized to 4x6 (bilinear, antialias)
        spec([_embed(kind="linear", pos_grid=[2, 2], interpolate="bilinear", antialias=True, names="siglip")],
             [image(3, 8, 12)]),
        # DINOv2: CLS with its own table row, mask_token, 3x3 table resized to 4x4 (bicubic)
        spec([_embed(cls_token=True, pos_cls=True, mask_token=True, pos_grid=[3, 3], names="dinov2")],
             [image(3, 8, 8)]),
        # DINOv3: CLS + registers, no positions (RoPE is in the blocks)
        spec([_embed(positions="none", cls_token=True, registers=2, mask_token=True, names="dinov3")],
             [image(3, 8, 6)]),
        spec([_embed(names="nanovlm", bias=False)], [image(1, 4, 4)]),
    ],
    "AttentionPoolingHead": [
        spec([layer("AttentionPoolingHead", {"num_heads": 2, "ff_dim": 16, "names": "siglip"})], [tokens(8)]),
        spec([layer("AttentionPoolingHead", {"num_heads": 4, "ff_dim": 12, "mlp": "gelu"})], [tokens(8, 3)]),
    ],
    "PixelShuffle": [
        spec([_embed(4), layer("PixelShuffle", {"factor": 2})], [image(3, 8, 8)]),
        spec([_embed(2), layer("PixelShuffle", {"factor": 2})], [image(3, 8, 12)]),
    ],
    "GridResample": [
        spec([_embed(), layer("GridResample", {"size": [3, 2]})], [image(3, 8, 8)]),
        spec([_embed(), layer("GridResample", {"size": [5, 5]})], [image(3, 8, 8)]),
        spec([_embed(cls_token=True, registers=1), layer("GridResample", {"size": [2, 2], "mode": "area"})],
             [image(3, 12, 8)]),
    ],
})

# --- seed-system ops (heads, generative, resampler, fVLM) -------------------------------------------------------------
_SCALAR_T = {"name": "time", "kind": "scalar", "shape": ["B"]}
_CLS_PATCHES = [layer("PatchEmbed", {"embed_dim": 8, "patch_size": 2, "cls_token": True}, id="embed")]
_FVLM_TINY = {"dino": {"hidden": 8, "layers": 2, "heads": 2, "ff_dim": 16, "patch_size": 4, "pos_grid": 3},
              "llm": {"vocab_size": 16, "hidden": 12, "layers": 2, "heads": 2, "kv_heads": 1, "ff_dim": 16},
              "query_dim": 8}
OP_EXAMPLES.update({
    "SegmentationHead": [
        spec(_PATCHES + [layer("SegmentationHead", {"hidden_dim": 6, "num_classes": 5})], [image(3, 8, 8)]),
        spec(_CLS_PATCHES + [layer("SegmentationHead", {"hidden_dim": 6, "num_classes": 3})], [image(3, 8, 6)]),
    ],
    "ClassificationHead": [
        spec(_CLS_PATCHES + [layer("ClassificationHead", {"hidden_dim": 6, "num_classes": 5})], [image(3, 8, 8)]),
        spec(_PATCHES + [layer("ClassificationHead", {"hidden_dim": 6, "num_classes": 5, "pool": "mean"})],
             [image(3, 8, 8)]),
        spec([layer("ClassificationHead", {"hidden_dim": 6, "num_classes": 4})], [vector(8)]),
    ],
    "DetectionHead": spec(_CLS_PATCHES + [layer("DetectionHead", {"hidden_dim": 6, "num_classes": 5,
                                                                  "num_anchors": 3})], [image(3, 8, 8)]),
    "OCRHead": [
        spec(_PATCHES + [layer("OCRHead", {"hidden_dim": 6, "max_seq_len": 7})], [image(3, 8, 8)]),
        spec(_CLS_PATCHES + [layer("OCRHead", {"hidden_dim": 4, "max_seq_len": 3, "depthwise": False,
                                               "kernel_size": 1})], [image(3, 8, 6)]),
    ],
    "FlowMatchingHead": [
        spec([layer("FlowMatchingHead", {"out_dim": 8, "hidden_dim": 12, "freq_dim": 8}, inputs=["x", "time"])],
             [tokens(8), _SCALAR_T]),
        spec([layer("FlowMatchingHead", {"out_dim": 8, "freq_dim": 8, "conditioning": "add", "num_blocks": 1,
                                         "grid": [2, 2]}, inputs=["x", "time"])], [tokens(8, 4), _SCALAR_T]),
    ],
    "VQVAEDecoder": [
        spec([layer("VQVAEDecoder", {"channels": [8, 6, 4], "codebook_size": 10})], [image(4, 2, 3, "z")]),
        spec([layer("VQVAEDecoder", {"channels": [6], "codebook_size": 5, "quantize": False})], [image(4, 2, 2)]),
        spec([layer("VQVAEDecoder", {})], [image(4, 2, 3, "z")]),
    ],
    "PerceiverResampler": [
        spec([layer("TransformerBlock", {"type": "PerceiverResampler", "num_latents": 3, "embed_dim": 16,
                                         "num_layers": 2, "num_heads": 2, "head_dim": 4, "ff_dim": 12})],
             [tokens(8)]),
        spec([layer("PerceiverResampler", {"num_latents": 2, "embed_dim": 8, "num_layers": 1, "num_heads": 2,
                                           "head_dim": 4, "ff_dim": 16})], [tokens(8, 3)]),
    ],
    "FoveatedVLM": [
        spec([layer("FoveatedVLM", dict(_FVLM_TINY, mode=mode), inputs=["frames", "input_ids"])],
             [{"name": "frames", "kind": "video", "shape": ["B", "F", 3, 8, 8]}, ids()])
        for mode in ("coarse_only", "coarse_fine", "autoregressive")
    ] + [spec([layer("FoveatedVLM", dict(_FVLM_TINY, llm=dict(_FVLM_TINY["llm"], tie=False)),
                     inputs=["frames", "input_ids"])],
              [{"name": "frames", "kind": "video", "shape": ["B", "F", 3, 12, 12]}, ids()])],
})

# --- VisionEncoder (compiler/ops/encoder.py): one tiny encoder per family ----------------------------------------------
def _vit(family: str, **kw) -> dict:
    return layer("VisionEncoder", {"family": family, "patch_size": 2, "hidden": 8, "layers": 2, "heads": 2,
                                   "ff_dim": 16, **kw}, id="vision")


OP_EXAMPLES["VisionEncoder"] = [
    spec([_vit("siglip", image_size=6, pooling_head=True)], [image(3, 8, 8)]),    # 3x3 table resized to 4x4
    spec([_vit("siglip2", image_size=4)], [image(3, 6, 8)]),                        # Linear patches, 2x2 -> 3x4
    spec([_vit("dinov2", image_size=6)], [image(3, 8, 4)]),                         # CLS row + bicubic 3x3 -> 4x2
    spec([_vit("dinov3", registers=1, mlp="swiglu")], [image(3, 8, 6)]),            # 2-D RoPE, LayerScale
    spec([_vit("nanovlm")], [image(3, 8, 8)]),                                      # fused qkv
]

# --- language-model ops (TransformerBlock variants, GQA_MoE_Layer, DecoderLM) ----------------------------------------
_LLAMA_BLOCK = {"depth": 2, "num_heads": 4, "num_kv_heads": 2, "ff_dim": 24, "mlp": "swiglu", "mlp_bias": False,
                "norm": "rmsnorm", "attn_bias": [], "causal": True, "rope": "1d", "names": "llama"}
_CLS_GRID = [layer("PatchEmbed", {"embed_dim": 8, "patch_size": 2, "cls_token": True}, id="embed")]
_TINY_LM = {"vocab_size": 16, "hidden": 16, "layers": 2, "heads": 4, "kv_heads": 2, "ff_dim": 24}
_TINY_MOE = {"vocab_size": 16, "hidden": 16, "layers": 2, "heads": 4, "kv_heads": 2, "num_experts": 4, "top_k": 2,
             "expert_dim": 8}
OP_EXAMPLES.update({
    "TransformerBlock": [
        spec([layer("TransformerBlock", _LLAMA_BLOCK)], [tokens(16)]),
        spec([layer("TransformerBlock", dict(_LLAMA_BLOCK, head_dim=8, rope_dim=4, names="omnic"))], [tokens(16)]),
        spec([layer("TransformerBlock", dict(_LLAMA_BLOCK, mlp="geglu_tanh", norm_offset=1.0, qk_norm=True,
                                              post_norms=True, attn_scale=0.3, sliding_window=2, rope_theta_local=1e4,
                                              layer_types=["sliding_attention", "full_attention"], names="gemma3"))],
             [tokens(16)]),
        spec([layer("TransformerBlock", dict(_LLAMA_BLOCK, qk_norm=True, layer_types=["conv", "full_attention"],
                                              names="lfm2"))], [tokens(16)]),
        spec([layer("TransformerBlock", {"num_heads": 2, "ff_dim": 12, "mlp": "gelu_tanh", "names": "siglip"})],
             [tokens(8)]),
        spec([layer("TransformerBlock", {"num_heads": 2, "ff_dim": 12, "layer_scale": 1.0, "names": "dinov2"})],
             [tokens(8)]),
        spec(_CLS_GRID + [layer("TransformerBlock", {"num_heads": 2, "ff_dim": 12, "mlp": "swiglu", "rope": "2d",
                                                        "rope_theta": 100.0, "attn_bias": ["q", "v", "o"],
                                                        "layer_scale": 1e-5, "names": "dinov3"})], [image(3, 8, 6)]),
        spec([layer("TransformerBlock", {"num_heads": 2, "ff_dim": 12, "mlp": "relu", "fused_qkv": True,
                                         "names": "nanovlm_vit"})], [tokens(8)]),
        spec([layer("TransformerBlock", {"num_heads": 2, "ff_dim": 12, "mlp": "geglu", "sliding_window": 2,
                                         "layer_type": "sliding_attention", "norm": "rmsnorm"})], [tokens(8)]),
    ],
    "GQA_MoE_Layer": [
        spec([layer("TransformerBlock", {"type": "GQA_MoE_Layer", "hidden_dim": 16, "num_experts": 4, "top_k": 2,
                                         "num_heads": 4, "num_kv_heads": 2, "rope_dim": 4, "expert_dim": 8,
                                         "repeat": 2})], [tokens(16)]),
        spec([layer("GQA_MoE_Layer", {"num_experts": 3, "top_k": 1, "num_heads": 2, "expert_dim": 6, "mlp": "geglu",
                                      "shared_expert_dim": 10, "attn_bias": ["q", "k", "v"], "norm_topk_prob": False,
                                      "names": "qwen2_moe"})], [tokens(8)]),
    ],
    "DecoderLM": [spec([layer("DecoderLM", dict(_TINY_LM, family="llama", tie=True), id="lm")], [ids()])]
    + [spec([layer("DecoderLM", dict(_TINY_LM, family="gemma3", head_dim=4, sliding_window=2,
                                     sliding_window_pattern=2), id="lm")], [ids()]),
       spec([layer("DecoderLM", dict(_TINY_LM, family="lfm2", layer_types=["conv", "full_attention"]), id="lm")],
            [ids()]),
       spec([layer("DecoderLM", dict(_TINY_MOE, family="qwen2_moe", shared_expert_dim=12), id="lm")], [ids()]),
       spec([layer("DecoderLM", dict(_TINY_MOE, family="mixtral"), id="lm")], [ids()]),
       spec([layer("DecoderLM", dict(_TINY_LM, family="nanovlm_lm"), id="lm")], [ids()])],
})

# MergeImageTokens: the test draws ids below the smallest vocabulary among their consumers, so with a 1-row
# embedding every position is the placeholder (id 0) and the image tokens (B, T, D) fill all of them
OP_EXAMPLES["MergeImageTokens"] = spec(
    [layer("Embedding", {"num_embeddings": 1, "embedding_dim": 8}, id="emb"),
     layer("MergeImageTokens", {"image_token_id": 0}, inputs=["emb", "img", "input_ids"])],
    [ids(), tokens(8, name="img")])


CASES: list[tuple[str, int, dict]] = [(op, i, s) for op, specs in OP_EXAMPLES.items()
                                      for i, s in enumerate(specs if isinstance(specs, list) else [specs])]
CASE_IDS = [f"{op}-{i}" for op, i, _ in CASES]
