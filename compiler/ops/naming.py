"""Per-family parameter names of a transformer block: role -> dotted name, as data.

Names are the interface (style.md, 4): each family uses the names of its checkpoints (transformers' for Llama,
Gemma-3, SigLIP, DINOv2, DINOv3, LFM2, Qwen2-MoE, Mixtral; the published code's for nanoVLM), so real checkpoints
load with only a prefix map. Both runtimes build their modules from these tables.

Roles: norm1 (before attention), norm2 (before the MLP), post_attn_norm / post_mlp_norm (Gemma's sandwich norms),
q k v o (projections), qkv (fused projection), q_norm k_norm (per-head norms), fc1 fc2 (plain MLP), gate up down
(gated MLP), ls1 ls2 (LayerScale), conv_in conv conv_out (LFM2 short convolution), router, experts_gate_up,
experts_down (stacked experts), shared_gate shared_up shared_down shared_router (shared expert).
"""
from __future__ import annotations

_LLAMA = {
    "norm1": "input_layernorm", "norm2": "post_attention_layernorm",
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
    "router": "mlp.gate", "experts_gate_up": "mlp.experts.gate_up_proj", "experts_down": "mlp.experts.down_proj",
    "shared_gate": "mlp.shared_expert.gate_proj", "shared_up": "mlp.shared_expert.up_proj",
    "shared_down": "mlp.shared_expert.down_proj", "shared_router": "mlp.shared_expert_gate",
}

NAMES: dict[str, dict[str, str]] = {
    "omnic": {
        "norm1": "norm1", "norm2": "norm2", "post_attn_norm": "post_attn_norm", "post_mlp_norm": "post_mlp_norm",
        "q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.o_proj", "qkv": "attn.qkv_proj",
        "q_norm": "attn.q_norm", "k_norm": "attn.k_norm",
        "fc1": "mlp.fc1", "fc2": "mlp.fc2", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
        "ls1": "ls1", "ls2": "ls2", "conv_in": "conv.in_proj", "conv": "conv.conv", "conv_out": "conv.out_proj",
        "router": "mlp.router", "experts_gate_up": "mlp.experts.gate_up_proj",
        "experts_down": "mlp.experts.down_proj", "shared_gate": "mlp.shared.gate_proj",
        "shared_up": "mlp.shared.up_proj", "shared_down": "mlp.shared.down_proj",
        "shared_router": "mlp.shared_gate",
    },
    "llama": _LLAMA,
    "qwen2_moe": _LLAMA,
    "mixtral": _LLAMA,
    "gemma3": {**_LLAMA, "post_attn_norm": "post_attention_layernorm", "norm2": "pre_feedforward_layernorm",
               "post_mlp_norm": "post_feedforward_layernorm"},
    "siglip": {
        "norm1": "layer_norm1", "norm2": "layer_norm2",
        "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
        "fc1": "mlp.fc1", "fc2": "mlp.fc2",
    },
    "dinov2": {
        "norm1": "norm1", "norm2": "norm2",
        "q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
        "o": "attention.output.dense", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",     # SwiGLU (giant): 5.x names
        "ls1": "layer_scale1.lambda1", "ls2": "layer_scale2.lambda1",
    },
    "dinov3": {
        "norm1": "norm1", "norm2": "norm2",
        "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj",
        "fc1": "mlp.up_proj", "fc2": "mlp.down_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
        "down": "mlp.down_proj", "ls1": "layer_scale1.lambda1", "ls2": "layer_scale2.lambda1",
    },
    "lfm2": {
        "norm1": "operator_norm", "norm2": "ffn_norm",
        "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
        "q_norm": "self_attn.q_layernorm", "k_norm": "self_attn.k_layernorm",
        "gate": "feed_forward.w1", "up": "feed_forward.w3", "down": "feed_forward.w2",
        "conv_in": "conv.in_proj", "conv": "conv.conv", "conv_out": "conv.out_proj",
    },
    "nanovlm_vit": {
        "norm1": "ln1", "norm2": "ln2", "qkv": "attn.qkv_proj", "o": "attn.out_proj",
        "fc1": "mlp.fc1", "fc2": "mlp.fc2",
        # the amazingvince/nanoVLM fork's DINOv3 blocks (ViTSwiGLUFFN, LayerScale)
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
        "ls1": "layer_scale1.lambda_param", "ls2": "layer_scale2.lambda_param",
    },
    "nanovlm_lm": {
        "norm1": "norm1", "norm2": "norm2",
        "q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.out_proj",
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
    },
}

FAMILIES = tuple(NAMES)


def name_of(family: str, role: str) -> str:
    table = NAMES[family]
    if role not in table:
        raise ValueError(f"naming family '{family}' has no name for '{role}'; use names 'omnic' or another family")
    return table[role]
