"""Import transformers configs (config.json as a dict) into omnic specs, and the key maps for their checkpoints.

`spec_from_hf_config(config)` dispatches on `config["model_type"]` through IMPORTERS (model_type -> function
returning a whole spec). Language models become one `DecoderLM` layer (id "lm", see compiler/ops/lm.py) whose
parameters are all written out, so the spec says everything and does not lean on the family presets; a
transformers state dict then loads with `hf_key_map(model_type)` (the prefix "lm." added to every name). Mamba-2
(`mamba2`) becomes one `Mamba2LM` layer (compiler/ops/mamba2.py), the same way.
Missing config keys take the defaults of transformers 5.x's config classes (DEFAULTS, data); legacy spellings
(`rope_theta`, `rope_scaling`, `full_attn_idxs`, `block_ff_dim`, `tie_embedding`) are read as transformers reads
them. Rotary parameters (`rope_parameters`, per layer type for Gemma-3; legacy `rope_scaling`) become `rope_theta`
plus a `rope_scaling` dict of compiler/rope.py (default, linear, dynamic, llama3, yarn, longrope), as transformers'
`standardize_rope_params` fills them in. What omnic cannot run (bidirectional Gemma,
activations outside compiler/activations.py, unknown rope keys) is refused with a ValueError that names the key.
Mixture-of-experts families with dense layers among the MoE ones (Qwen2-MoE / Qwen3-MoE `decoder_sparse_step`,
`mlp_only_layers`; DeepSeek-V3 `first_k_dense_replace`) give the per-layer pattern as `ffn_types`.

Vision encoders (siglip_vision_model, siglip2_vision_model, dinov2, dinov3_vit; full siglip / siglip2 configs give
their vision tower) become one `VisionEncoder` layer (id "vision", compiler/ops/encoder.py) over a pixel_values
image of the config's training size; their key maps read the names `save_pretrained` writes (the hub's).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

from ..activations import from_hf as act_from_hf
from ..activations import hf_names
from ..rope import from_hf as rope_from_hf
from ..rope import resolve_scaling

LM_ID = "lm"

# transformers 5.x config-class defaults, for the keys the importers read
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
                  rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                  rope_theta=10000.0, max_position_embeddings=2048),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, hidden_act="silu", rms_norm_eps=1e-6,
                  tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096, max_window_layers=28,
                  layer_types=None, rope_theta=10000.0, max_position_embeddings=32768),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, head_dim=128, hidden_act="silu", rms_norm_eps=1e-6,
                  tie_word_embeddings=False, attention_bias=False, use_sliding_window=False, sliding_window=4096,
                  max_window_layers=28, layer_types=None, rope_theta=10000.0, max_position_embeddings=32768),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
                    rms_norm_eps=1e-6, tie_word_embeddings=False, sliding_window=4096, rope_theta=10000.0,
                    max_position_embeddings=131072),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh",
                   rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False, query_pre_attn_scalar=256,
                   sliding_window=4096, layer_types=None, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                   use_bidirectional_attention=None, rope_theta=10000.0, max_position_embeddings=8192),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", rms_norm_eps=1e-5,
                 tie_word_embeddings=False, sliding_window=None, rope_theta=10000.0, max_position_embeddings=4096,
                 original_max_position_embeddings=4096, partial_rotary_factor=1.0),
    "smollm3": dict(vocab_size=128256, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                    num_attention_heads=16, num_key_value_heads=4, hidden_act="silu", rms_norm_eps=1e-6,
                    tie_word_embeddings=True, use_sliding_window=False, sliding_window=None, no_rope_layers=None,
                    no_rope_layer_interval=4, layer_types=None, attention_bias=False, mlp_bias=False,
                    rope_theta=2_000_000.0, max_position_embeddings=32768),
    "olmo2": dict(vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", rms_norm_eps=1e-5,
                  tie_word_embeddings=False, attention_bias=False, rope_theta=10000.0, max_position_embeddings=2048),
    "gemma3_text": dict(vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
                        attention_bias=False, query_pre_attn_scalar=256, sliding_window=4096, layer_types=None,
                        sliding_window_pattern=6, final_logit_softcapping=None, attn_logit_softcapping=None,
                        use_bidirectional_attention=False, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
                        max_position_embeddings=131_072),
    "lfm2": dict(vocab_size=65536, hidden_size=2560, intermediate_size=12288, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, norm_eps=1e-5, tie_word_embeddings=True,
                 conv_bias=False, conv_L_cache=3, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
                 block_auto_adjust_ff_dim=True, full_attn_idxs=None, layer_types=None, rope_theta=1_000_000.0,
                 max_position_embeddings=128_000),
    "qwen2_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, hidden_act="silu", rms_norm_eps=1e-6,
                      tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                      max_window_layers=28, layer_types=None, decoder_sparse_step=1, moe_intermediate_size=1408,
                      shared_expert_intermediate_size=5632, num_experts_per_tok=4, num_experts=60,
                      norm_topk_prob=False, mlp_only_layers=None, qkv_bias=True, rope_theta=10000.0,
                      max_position_embeddings=32768),
    "qwen3_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24,
                      num_attention_heads=32, num_key_value_heads=4, head_dim=None, hidden_act="silu",
                      rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, use_sliding_window=False,
                      sliding_window=4096, decoder_sparse_step=1, moe_intermediate_size=768, num_experts_per_tok=8,
                      num_experts=128, norm_topk_prob=False, mlp_only_layers=None, rope_theta=10000.0, max_position_embeddings=40960),
    "deepseek_v3": dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
                        num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=None, n_shared_experts=1,
                        n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
                        qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4,
                        num_experts_per_tok=8, first_k_dense_replace=3, norm_topk_prob=True, hidden_act="silu",
                        rms_norm_eps=1e-6, tie_word_embeddings=False, rope_interleave=True, attention_bias=False,
                        rope_theta=10000.0, max_position_embeddings=4096),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
                    rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None, num_experts_per_tok=2,
                    num_local_experts=8, rope_theta=1_000_000.0, max_position_embeddings=131072),
    "mamba2": dict(vocab_size=32768, hidden_size=4096, num_hidden_layers=64, num_heads=128, head_dim=64,
                   state_size=128, expand=2, n_groups=8, conv_kernel=4, use_bias=False, use_conv_bias=True,
                   hidden_act="silu", layer_norm_epsilon=1e-5, chunk_size=256, time_step_limit=(0.0, float("inf")),
                   tie_word_embeddings=False),
}

class _Cfg:
    """A config dict read with the family's defaults; `[key]` of an unknown key is a KeyError naming it."""

    def __init__(self, cfg: dict, model_type: str):
        self.cfg, self.defaults, self.model_type = cfg, DEFAULTS[model_type], model_type

    def __getitem__(self, k: str) -> Any:
        if k in self.cfg:
            return self.cfg[k]
        if k in self.defaults:
            return self.defaults[k]
        raise KeyError(f"{self.model_type} config has no {k!r}")

    def get(self, k: str, default: Any = None) -> Any:
        return self.cfg.get(k, self.defaults.get(k, default))


def _refuse(model_type: str, key: str, value: Any, why: str) -> None:
    raise ValueError(f"{model_type} config: {key}={value!r} is not supported by omnic ({why})")


def _rope(c: _Cfg, layer_type: Optional[str] = None) -> dict:
    """This layer type's rotary params for DecoderLM: rope_theta, and rope_scaling (a dict, compiler/rope.py) unless
    the type is default; rope_dim where partial_rotary_factor < 1. Read as transformers 5.x standardises them:
    `rope_parameters` (nested per layer type, or flat), the legacy `rope_scaling` taking precedence (Gemma-3: for
    the global layers only), `rope_theta` / `rope_local_base_freq` where the dict has no base."""
    rp = c.cfg.get("rope_parameters") or {}
    nested = any(isinstance(v, dict) for v in rp.values())
    entry = dict(rp.get(layer_type) or {}) if nested and layer_type else ({} if nested else dict(rp))
    legacy = c.cfg.get("rope_scaling")
    if legacy and (c.model_type != "gemma3_text" or layer_type == "full_attention"):
        entry = {**entry, **legacy} if c.model_type == "gemma3_text" else dict(legacy)
    if c.model_type == "phi3":
        if entry.get("rope_type", entry.get("type")) in ("su", "yarn"):       # Phi-3's legacy names of longrope
            entry["rope_type"] = "longrope"
            entry.pop("type", None)
        entry["original_max_position_embeddings"] = c["original_max_position_embeddings"]
    if "rope_theta" in entry:
        theta = entry["rope_theta"]
    elif layer_type == "sliding_attention" and "rope_local_base_freq" in c.defaults:
        theta = c["rope_local_base_freq"]
    else:
        theta = c["rope_theta"]
    key = "rope_scaling" if legacy else "rope_parameters"
    out: dict = {"rope_theta": float(theta)}
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    prf = entry.get("partial_rotary_factor", c.get("partial_rotary_factor", 1.0))
    if prf != 1.0:
        out["rope_dim"] = int(head_dim * prf)
    try:
        scaling = rope_from_hf(entry, c.get("max_position_embeddings"))
    except (ValueError, TypeError) as e:          # pydantic's ValidationError is a ValueError
        raise ValueError(f"{c.model_type} config: {key}: {e}") from None
    _, errors = resolve_scaling(scaling, out.get("rope_dim", head_dim))
    if errors:
        raise ValueError(f"{c.model_type} config: {key}.{errors[0][0]}: {errors[0][1]} (as transformers' "
                         f"modeling_rope_utils requires)")
    if scaling.rope_type != "default":
        out["rope_scaling"] = scaling.model_dump(exclude_none=True, exclude_defaults=True) | {
            "rope_type": scaling.rope_type}
    return out


def _mlp(c: _Cfg, key: str, gated: bool = True) -> str:
    """The MLP kind of activation config key `key` (compiler/activations.py's table)."""
    kind = act_from_hf(c[key], gated)
    if kind is None:
        _refuse(c.model_type, key, c[key], "activations of transformers' ACT2FN: " + ", ".join(hf_names()))
    return kind


def _attention(c: _Cfg) -> dict:
    heads = c["num_attention_heads"]
    return dict(hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=heads,
                kv_heads=c.get("num_key_value_heads") or heads,
                head_dim=c.get("head_dim") or c["hidden_size"] // heads)


def lm_spec(name: str, params: dict, op: str = "DecoderLM") -> dict:
    """A spec of one language-model layer (DecoderLM, Mamba2LM) with id LM_ID over (B, T) token ids."""
    return {"name": name, "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
            "layers": [{"id": LM_ID, "type": op, "params": params}]}


# --- one function per model_type -------------------------------------------------------------------------------------
def _dense(c: _Cfg, family: str, act_key: str = "hidden_act", **extra) -> dict:
    """A DecoderLM spec of a dense family: the keys every such config has, the rope, then `extra`."""
    p = dict(family=family, vocab_size=c["vocab_size"], **_attention(c), ff_dim=c["intermediate_size"],
             mlp=_mlp(c, act_key), norm_eps=float(c["rms_norm_eps"]), **_rope(c),
             tie=bool(c["tie_word_embeddings"]))
    p.update(extra)
    return lm_spec(c.cfg.get("_name_or_path") or family, p)


def _all_bias(c: _Cfg) -> list[str]:
    return ["q", "k", "v", "o"] if c["attention_bias"] else []


def _sliding(types: list[str], window: Optional[int]) -> dict:
    """layer_types and sliding_window for DecoderLM (omitted when every layer is full attention)."""
    if window is None or "sliding_attention" not in types:
        return {}
    return dict(layer_types=types, sliding_window=window)


def _qwen_types(c: _Cfg) -> dict:
    """Qwen2 / Qwen3: sliding layers from max_window_layers on, when use_sliding_window."""
    window = c["sliding_window"] if c["use_sliding_window"] else None
    types = c["layer_types"] or ["sliding_attention" if window is not None and i >= c["max_window_layers"]
                                 else "full_attention" for i in range(c["num_hidden_layers"])]
    return _sliding(types, window)


def _llama(cfg: dict) -> dict:
    c = _Cfg(cfg, "llama")
    return _dense(c, "llama", mlp_bias=bool(c["mlp_bias"]), attn_bias=_all_bias(c))


def _qwen2(cfg: dict) -> dict:
    c = _Cfg(cfg, "qwen2")
    return _dense(c, "qwen2", attn_bias=["q", "k", "v"], **_qwen_types(c))


def _qwen3(cfg: dict) -> dict:
    c = _Cfg(cfg, "qwen3")
    return _dense(c, "qwen3", attn_bias=_all_bias(c), qk_norm=True, **_qwen_types(c))


def _mistral(cfg: dict) -> dict:
    c = _Cfg(cfg, "mistral")
    return _dense(c, "mistral", **_sliding(["sliding_attention"] * c["num_hidden_layers"], c["sliding_window"]))


def _phi3(cfg: dict) -> dict:
    c = _Cfg(cfg, "phi3")
    return _dense(c, "phi3", **_sliding(["sliding_attention"] * c["num_hidden_layers"], c["sliding_window"]))


def _smollm3(cfg: dict) -> dict:
    c = _Cfg(cfg, "smollm3")
    n = c["num_hidden_layers"]
    use_rope = c["no_rope_layers"] or [int((i + 1) % c["no_rope_layer_interval"] != 0) for i in range(n)]
    window = c["sliding_window"] if c["use_sliding_window"] else None
    types = c["layer_types"] or ["sliding_attention" if window is not None and not use_rope[i] else "full_attention"
                                 for i in range(n)]
    nope = [i for i in range(n) if not use_rope[i]]
    return _dense(c, "smollm3", mlp_bias=bool(c["mlp_bias"]), attn_bias=_all_bias(c),
                  **({"nope_layers": nope} if nope else {}), **_sliding(types, window))


def _olmo2(cfg: dict) -> dict:
    c = _Cfg(cfg, "olmo2")
    return _dense(c, "olmo2", attn_bias=_all_bias(c))


def _gemma_types(c: _Cfg, pattern: int) -> list[str]:
    return c["layer_types"] or ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                for i in range(c["num_hidden_layers"])]


def _gemma_common(c: _Cfg) -> dict:
    """What Gemma-2 and Gemma-3 configs share: attention scale, soft-caps, biases."""
    if c["use_bidirectional_attention"]:
        _refuse(c.model_type, "use_bidirectional_attention", True, "causal decoders only")
    p = dict(attn_bias=_all_bias(c), query_pre_attn_scalar=float(c["query_pre_attn_scalar"]))
    for key, ours in (("attn_logit_softcapping", "attn_softcap"), ("final_logit_softcapping", "final_softcap")):
        if c[key] is not None:
            p[ours] = float(c[key])
    return p


def _gemma2(cfg: dict) -> dict:
    c = _Cfg(cfg, "gemma2")
    types = _gemma_types(c, 2)
    return _dense(c, "gemma2", "hidden_activation", **_gemma_common(c), layer_types=types,
                  sliding_window=c["sliding_window"])


def _gemma3(cfg: dict) -> dict:
    """Gemma3Config (multimodal): its text model only."""
    text = dict(cfg.get("text_config") or {})
    text.setdefault("model_type", "gemma3_text")
    return _gemma3_text(text)


def _gemma3_text(cfg: dict) -> dict:
    """Gemma-3: global and sliding layers have their own rotary params (4B and larger: linear scaling on the global
    layers only)."""
    c = _Cfg(cfg, "gemma3_text")
    types = c["layer_types"] or _gemma_types(c, c["sliding_window_pattern"])
    full, local = _rope(c, "full_attention"), _rope(c, "sliding_attention")
    rope = dict(rope_theta=full["rope_theta"], rope_theta_local=local["rope_theta"])
    if "rope_scaling" in full or "rope_scaling" in local:
        rope["rope_scaling"] = full.get("rope_scaling", {"rope_type": "default"})
        rope["rope_scaling_local"] = local.get("rope_scaling", {"rope_type": "default"})
    p = dict(family="gemma3", vocab_size=c["vocab_size"], **_attention(c), ff_dim=c["intermediate_size"],
             mlp=_mlp(c, "hidden_activation"), mlp_bias=False, norm_eps=float(c["rms_norm_eps"]),
             norm_offset=1.0, post_norms=True, qk_norm=True, scale_embeddings=True, **_gemma_common(c),
             layer_types=types, sliding_window=c["sliding_window"], **rope, tie=bool(c["tie_word_embeddings"]))
    return lm_spec(cfg.get("_name_or_path") or "gemma3", p)


def lfm2_ff_dim(c) -> int:
    """Lfm2MLP's effective width: 2/3 of intermediate_size, times the multiplier, rounded up to block_multiple_of."""
    ff = c.get("block_ff_dim") or c["intermediate_size"]
    if c["block_auto_adjust_ff_dim"]:
        ff = int(2 * ff / 3)
        if c["block_ffn_dim_multiplier"] is not None:
            ff = int(c["block_ffn_dim_multiplier"] * ff)
            m = c["block_multiple_of"]
            ff = m * ((ff + m - 1) // m)
    return ff


def _lfm2(cfg: dict) -> dict:
    c = _Cfg(cfg, "lfm2")
    n = c["num_hidden_layers"]
    types = c["layer_types"]
    if types is None:
        idx = c["full_attn_idxs"]
        types = ["full_attention" if idx is None or i in idx else "conv" for i in range(n)]
    tie = cfg.get("tie_word_embeddings", cfg.get("tie_embedding", True))
    p = dict(family="lfm2", vocab_size=c["vocab_size"], **_attention(c), ff_dim=lfm2_ff_dim(c), mlp="swiglu",
             mlp_bias=False, attn_bias=[], norm_eps=float(c["norm_eps"]), qk_norm=True, layer_types=types,
             conv_kernel=c["conv_L_cache"], conv_bias=bool(c["conv_bias"]), **_rope(c), tie=bool(tie))
    return lm_spec(cfg.get("_name_or_path") or "lfm2", p)


def _ffn_types(c: _Cfg) -> list[str] | None:
    """Qwen2-MoE / Qwen3-MoE: layer i is MoE unless listed in mlp_only_layers or (i + 1) % decoder_sparse_step != 0
    (or num_experts is 0), as their decoder layers decide; None when every layer is MoE."""
    step, only = c["decoder_sparse_step"], set(c["mlp_only_layers"] or [])
    if step < 1:
        _refuse(c.model_type, "decoder_sparse_step", step, "a positive layer step")
    types = ["moe" if i not in only and c["num_experts"] > 0 and (i + 1) % step == 0 else "dense"
             for i in range(c["num_hidden_layers"])]
    return None if "dense" not in types else types


def _moe_stack(c: _Cfg, experts: int) -> dict:
    """The mixture-of-experts params common to the Qwen MoE families, dense layers included."""
    types = _ffn_types(c)
    if types and "moe" not in types:
        _refuse(c.model_type, "mlp_only_layers/decoder_sparse_step/num_experts", c["num_experts"],
                "no layer has experts: import it as a dense model")
    p = dict(num_experts=experts, top_k=c["num_experts_per_tok"], expert_dim=c["moe_intermediate_size"],
             norm_topk_prob=bool(c["norm_topk_prob"]))
    if types:
        p.update(ffn_types=types, ff_dim=c["intermediate_size"])
    return p


def _qwen2_moe(cfg: dict) -> dict:
    c = _Cfg(cfg, "qwen2_moe")
    n = c["num_hidden_layers"]
    types = c["layer_types"]
    if types is None:
        types = ["sliding_attention" if (i + 1) % 2 and i < c["max_window_layers"] and c["use_sliding_window"]
                 else "full_attention" for i in range(n)]
    shared = c["shared_expert_intermediate_size"]
    p = dict(family="qwen2_moe", vocab_size=c["vocab_size"], **_attention(c), mlp=_mlp(c, "hidden_act"),
             attn_bias=["q", "k", "v"] if c["qkv_bias"] else [], norm_eps=float(c["rms_norm_eps"]),
             layer_types=types, **_rope(c), tie=bool(c["tie_word_embeddings"]),
             **_moe_stack(c, c["num_experts"]))
    if shared is not None:             # 0 too: transformers still builds a zero-width expert and its gate
        p["shared_expert_dim"] = shared
    if "sliding_attention" in types:
        p["sliding_window"] = c["sliding_window"]
    return lm_spec(cfg.get("_name_or_path") or "qwen2_moe", p)


def _qwen3_moe(cfg: dict) -> dict:
    """Qwen3-MoE: q/k RMSNorm per head, no shared expert, every layer sliding when use_sliding_window."""
    if "num_local_experts" in cfg:         # transformers 5.x writes num_experts under this name (attribute_map)
        cfg = {k: v for k, v in cfg.items() if k != "num_local_experts"} | {"num_experts": cfg["num_local_experts"]}
    c = _Cfg(cfg, "qwen3_moe")
    p = dict(family="qwen3_moe", vocab_size=c["vocab_size"], **_attention(c), mlp=_mlp(c, "hidden_act"),
             attn_bias=["q", "k", "v", "o"] if c["attention_bias"] else [], norm_eps=float(c["rms_norm_eps"]),
             qk_norm=True, **_rope(c), tie=bool(c["tie_word_embeddings"]), **_moe_stack(c, c["num_experts"]))
    if c["use_sliding_window"] and c["sliding_window"]:
        p.update(layer_types=["sliding_attention"] * c["num_hidden_layers"], sliding_window=c["sliding_window"])
    return lm_spec(cfg.get("_name_or_path") or "qwen3_moe", p)


def _deepseek_v3(cfg: dict) -> dict:
    """DeepSeek-V3: multi-head latent attention (MLA_Layer), the first first_k_dense_replace layers dense, the
    others group-routed sigmoid experts with n_shared_experts ungated shared experts."""
    c = _Cfg(cfg, "deepseek_v3")
    n, heads = c["num_hidden_layers"], c["num_attention_heads"]
    kv = c.get("num_key_value_heads") or heads
    if kv != heads:
        _refuse("deepseek_v3", "num_key_value_heads", kv, "latent attention expands keys and values for every head")
    dense = min(c["first_k_dense_replace"] or 0, n)
    E = c.get("num_local_experts", c["n_routed_experts"])
    rope = _rope(_Cfg({**cfg, "head_dim": c["qk_rope_head_dim"]}, "deepseek_v3"))   # rotated: qk_rope_head_dim
    p = dict(family="deepseek_v3", vocab_size=c["vocab_size"], hidden=c["hidden_size"], layers=n, heads=heads,
             mlp=_mlp(c, "hidden_act"), norm_eps=float(c["rms_norm_eps"]), **rope,
             tie=bool(c["tie_word_embeddings"]), num_experts=E, top_k=c["num_experts_per_tok"],
             expert_dim=c["moe_intermediate_size"], shared_expert_dim=c["moe_intermediate_size"] * c["n_shared_experts"],
             norm_topk_prob=bool(c["norm_topk_prob"]), n_group=c["n_group"] or 1, topk_group=c["topk_group"] or 1,
             routed_scaling_factor=float(c["routed_scaling_factor"]), q_lora_rank=c["q_lora_rank"],
             kv_lora_rank=c["kv_lora_rank"], qk_nope_head_dim=c["qk_nope_head_dim"],
             qk_rope_head_dim=c["qk_rope_head_dim"], v_head_dim=c["v_head_dim"],
             rope_interleave=bool(c["rope_interleave"]), mla_bias=bool(c["attention_bias"]))
    if not c["n_shared_experts"]:
        del p["shared_expert_dim"]
    if dense:
        p.update(ffn_types=["dense"] * dense + ["moe"] * (n - dense), ff_dim=c["intermediate_size"])
    return lm_spec(cfg.get("_name_or_path") or "deepseek_v3", p)


def _mixtral(cfg: dict) -> dict:
    c = _Cfg(cfg, "mixtral")
    window = c["sliding_window"]
    p = dict(family="mixtral", vocab_size=c["vocab_size"], **_attention(c), mlp=_mlp(c, "hidden_act"),
             attn_bias=[], norm_eps=float(c["rms_norm_eps"]), **_rope(c),
             tie=bool(c["tie_word_embeddings"]), num_experts=c["num_local_experts"], top_k=c["num_experts_per_tok"],
             expert_dim=c["intermediate_size"], norm_topk_prob=True)
    if window:
        p.update(layer_types=["sliding_attention"] * c["num_hidden_layers"], sliding_window=window)
    return lm_spec(cfg.get("_name_or_path") or "mixtral", p)


def _json_float(v: Any) -> float:
    """A float as config.json files write it: a number, "Infinity", or transformers 5.x's {"__float__": "Infinity"}."""
    return float(v["__float__"] if isinstance(v, dict) and "__float__" in v else v)


def _mamba2(cfg: dict) -> dict:
    """Mamba2ForCausalLM: one Mamba2LM layer (compiler/ops/mamba2.py) with id LM_ID."""
    c = _Cfg(cfg, "mamba2")
    if c["hidden_act"] not in ("silu", "swish"):
        _refuse("mamba2", "hidden_act", c["hidden_act"], "the convolution's activation is silu")
    lo, hi = (_json_float(v) for v in c["time_step_limit"])
    if (lo, hi) != (0.0, float("inf")):
        _refuse("mamba2", "time_step_limit", c["time_step_limit"], "dt is not clamped: only (0, inf)")
    p = dict(vocab_size=c["vocab_size"], hidden=c["hidden_size"], layers=c["num_hidden_layers"],
             expand=c["expand"], num_heads=c["num_heads"], head_dim=c["head_dim"], state_size=c["state_size"],
             n_groups=c["n_groups"], conv_kernel=c["conv_kernel"], use_bias=bool(c["use_bias"]),
             use_conv_bias=bool(c["use_conv_bias"]), norm_eps=float(c["layer_norm_epsilon"]),
             chunk_size=c["chunk_size"], tie=bool(c["tie_word_embeddings"]))
    return lm_spec(cfg.get("_name_or_path") or "mamba2", p, "Mamba2LM")


# --- vision encoders (one VisionEncoder layer with id VISION_ID; see compiler/ops/encoder.py) ----------------------------
VISION_ID = "vision"

VISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "siglip_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                                layer_norm_eps=1e-6, vision_use_head=True),
    "siglip2_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, num_channels=3, patch_size=16, num_patches=256,
                                 hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=True),
    "dinov2": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, hidden_act="gelu",
                   layer_norm_eps=1e-6, image_size=224, patch_size=14, num_channels=3, qkv_bias=True,
                   layerscale_value=1.0, use_swiglu_ffn=False, use_mask_token=True),
    "dinov3_vit": dict(patch_size=16, hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
                       num_attention_heads=6, hidden_act="gelu", layer_norm_eps=1e-5, rope_theta=100.0,
                       image_size=224, num_channels=3, query_bias=True, key_bias=False, value_bias=True,
                       proj_bias=True, mlp_bias=True, layerscale_value=1.0, use_gated_mlp=False,
                       num_register_tokens=0),
}
DEFAULTS.update(VISION_DEFAULTS)

def _side(c: _Cfg, key: str) -> int:
    """A square size (`image_size`, `patch_size`): an int, or a pair of equal ints."""
    v = c[key]
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or v[0] != v[1]:
            _refuse(c.model_type, key, v, "square images and patches only")
        v = v[0]
    return int(v)


def _plain_mlp(c: _Cfg, key: str = "hidden_act") -> str:
    return _mlp(c, key, gated=False)


def vision_spec(name: str, channels: int, size: int, params: dict, outputs: list[str] | None = None) -> dict:
    """A spec of one VisionEncoder layer with id VISION_ID over (B, C, size, size) pixel_values."""
    spec = {"name": name, "inputs": [{"name": "pixel_values", "kind": "image", "shape": ["B", channels, size, size]}],
            "layers": [{"id": VISION_ID, "type": "VisionEncoder", "params": params}]}
    if outputs:
        spec["outputs"] = outputs
    return spec


def _siglip_family(c: _Cfg, family: str, image_size: int) -> dict:
    patch = _side(c, "patch_size")
    head = bool(c["vision_use_head"])
    p = dict(family=family, image_size=image_size, patch_size=patch, channels=c["num_channels"],
             hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
             ff_dim=c["intermediate_size"], mlp=_plain_mlp(c), norm_eps=float(c["layer_norm_eps"]),
             pooling_head=head)
    # the head consumes the final norm: keep both outputs, as transformers' last_hidden_state and pooler_output
    root = f"{VISION_ID}.vision_model."
    outs = [root + "post_layernorm", root + "head"] if head else None
    return vision_spec(c.cfg.get("_name_or_path") or family, c["num_channels"], image_size, p, outs)


def _siglip_vision(cfg: dict) -> dict:
    c = _Cfg(cfg, "siglip_vision_model")
    return _siglip_family(c, "siglip", _side(c, "image_size"))


def _siglip2_vision(cfg: dict) -> dict:
    """NaFlex SigLIP2: the position table is sqrt(num_patches)^2; the input is that grid's image (any other size
    resizes the table, bilinear with antialias, as transformers does for `spatial_shapes`)."""
    c = _Cfg(cfg, "siglip2_vision_model")
    n = int(round(c["num_patches"] ** 0.5))
    if n * n != c["num_patches"]:
        _refuse("siglip2_vision_model", "num_patches", c["num_patches"], "a square position table")
    return _siglip_family(c, "siglip2", n * _side(c, "patch_size"))


def _siglip_full(cfg: dict) -> dict:
    """SiglipConfig / Siglip2Config (vision + text): the vision tower only (its keys start `vision_model.`)."""
    sub = dict(cfg.get("vision_config") or {})
    mt = cfg.get("model_type") + "_vision_model"
    sub["model_type"] = mt
    sub.setdefault("_name_or_path", cfg.get("_name_or_path"))
    return IMPORTERS[mt](sub)


def _dinov2(cfg: dict) -> dict:
    """Dinov2Model; `use_swiglu_ffn` (giant): Dinov2SwiGLUFFN, SiLU-gated, 2/3 of the MLP width rounded up to a
    multiple of 8, with biases (its files fuse gate|up as `mlp.weights_in`: keymaps.DINOV2_BLOCKS splits it)."""
    c = _Cfg(cfg, "dinov2")
    D, size = c["hidden_size"], _side(c, "image_size")
    ff = int(D * c["mlp_ratio"])
    if c["use_swiglu_ffn"]:
        mlp, ff = "swiglu", (int(ff * 2 / 3) + 7) // 8 * 8
    else:
        mlp = _plain_mlp(c)
    p = dict(family="dinov2", image_size=size, patch_size=_side(c, "patch_size"), channels=c["num_channels"],
             hidden=D, layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
             ff_dim=ff, mlp=mlp, norm_eps=float(c["layer_norm_eps"]),
             layer_scale=float(c["layerscale_value"]), mask_token=bool(c["use_mask_token"]),
             attn_bias=["q", "k", "v", "o"] if c["qkv_bias"] else ["o"])
    return vision_spec(cfg.get("_name_or_path") or "dinov2", c["num_channels"], size, p)


def _dinov3_vit(cfg: dict) -> dict:
    c = _Cfg(cfg, "dinov3_vit")
    bias = [r for r, k in (("q", "query_bias"), ("k", "key_bias"), ("v", "value_bias"), ("o", "proj_bias")) if c[k]]
    mlp = _mlp(c, "hidden_act") if c["use_gated_mlp"] else _plain_mlp(c)
    size = _side(c, "image_size")
    p = dict(family="dinov3", patch_size=_side(c, "patch_size"), channels=c["num_channels"],
             hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
             ff_dim=c["intermediate_size"], mlp=mlp, mlp_bias=bool(c["mlp_bias"]),
             norm_eps=float(c["layer_norm_eps"]), layer_scale=float(c["layerscale_value"]),
             registers=c["num_register_tokens"], rope_theta=float(c["rope_theta"]), attn_bias=bias)
    return vision_spec(cfg.get("_name_or_path") or "dinov3_vit", c["num_channels"], size, p)


IMPORTERS: dict[str, Callable[[dict], dict]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "mistral": _mistral,
    "phi3": _phi3,
    "smollm3": _smollm3,
    "olmo2": _olmo2,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3_text,
    "gemma3": _gemma3,
    "lfm2": _lfm2,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "deepseek_v3": _deepseek_v3,
    "mixtral": _mixtral,
    "mamba2": _mamba2,
    "siglip_vision_model": _siglip_vision,
    "siglip2_vision_model": _siglip2_vision,
    "siglip": _siglip_full,
    "siglip2": _siglip_full,
    "dinov2": _dinov2,
    "dinov3_vit": _dinov3_vit,
}

# key maps (the names real checkpoints use -> the spec's) are data in compiler/importers/keymaps.py, one per family
from .keymaps import key_map  # noqa: E402


def spec_from_hf_config(config: dict, name: str | None = None) -> dict:
    """The omnic spec of a transformers config (the parsed config.json). Its name: `name`, else the config's
    `_name_or_path`, else its first `architectures` entry; a language model's `max_position_embeddings` (of the
    text config for multimodal configs) becomes the spec's context."""
    mt = config.get("model_type")
    if mt not in IMPORTERS:
        raise ValueError(f"unsupported model_type {mt!r}; supported: {', '.join(sorted(IMPORTERS))}")
    spec = IMPORTERS[mt](config)
    named = name or config.get("_name_or_path") or (config.get("architectures") or [None])[0]
    if named:
        spec["name"] = str(named)
    ctx = config.get("max_position_embeddings") or (config.get("text_config") or {}).get("max_position_embeddings")
    if ctx and any(layer["type"] == "DecoderLM" for layer in spec["layers"]):
        spec["context"] = int(ctx)
    return spec


def hf_key_map(model_type: str) -> list:
    """The key map from a transformers checkpoint of `model_type` (any naming generation: compiler/importers/
    keymaps.py) to the imported spec's weight names, for `load_state_dict_mapped` / `load_checkpoint`."""
    return key_map(model_type)


def import_hf(config_path: str, out_path: str) -> dict:
    """Read a config.json, write its spec as JSON to `out_path`, return the spec."""
    with open(config_path, encoding="utf-8") as f:
        spec = spec_from_hf_config(json.load(f))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")
    return spec
