"""Import transformers configs (config.json as a dict) into omnic specs, and the key maps for their checkpoints.

`spec_from_hf_config(config)` dispatches on `config["model_type"]` through IMPORTERS (model_type -> function
returning a whole spec). Language models become one `DecoderLM` layer (id "lm", see compiler/ops/lm.py) whose
parameters are all written out, so the spec says everything and does not lean on the family presets; a
transformers state dict then loads with `hf_key_map(model_type)` (the prefix "lm." added to every name).
Missing config keys take the defaults of transformers 5.x's config classes (DEFAULTS, data); legacy spellings
(`rope_theta`, `rope_scaling`, `full_attn_idxs`, `block_ff_dim`, `tie_embedding`) are read as transformers reads
them. What omnic cannot run (rope scaling, logit soft-capping, dense layers among MoE layers) is refused with a
ValueError that names the key.

Vision encoders (siglip_vision_model, siglip2_vision_model, dinov2, dinov3_vit; full siglip / siglip2 configs give
their vision tower) become one `VisionEncoder` layer (id "vision", compiler/ops/encoder.py) over a pixel_values
image of the config's training size; their key maps read the names `save_pretrained` writes (the hub's).
"""
from __future__ import annotations

import json
from typing import Any, Callable

LM_ID = "lm"

# transformers 5.x config-class defaults, for the keys the importers read
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
                  rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                  rope_theta=10000.0),
    "gemma3_text": dict(vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
                        attention_bias=False, query_pre_attn_scalar=256, sliding_window=4096, layer_types=None,
                        sliding_window_pattern=6, final_logit_softcapping=None, attn_logit_softcapping=None,
                        use_bidirectional_attention=False, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0),
    "lfm2": dict(vocab_size=65536, hidden_size=2560, intermediate_size=12288, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, norm_eps=1e-5, tie_word_embeddings=True,
                 conv_bias=False, conv_L_cache=3, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
                 block_auto_adjust_ff_dim=True, full_attn_idxs=None, layer_types=None, rope_theta=1_000_000.0),
    "qwen2_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, hidden_act="silu", rms_norm_eps=1e-6,
                      tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                      max_window_layers=28, layer_types=None, decoder_sparse_step=1, moe_intermediate_size=1408,
                      shared_expert_intermediate_size=5632, num_experts_per_tok=4, num_experts=60,
                      norm_topk_prob=False, mlp_only_layers=None, qkv_bias=True, rope_theta=10000.0),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
                    rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None, num_experts_per_tok=2,
                    num_local_experts=8, rope_theta=1_000_000.0),
}

# transformers' activation names -> the gated MLP kinds of TransformerBlock
GATED_MLP = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "gelu_pytorch_tanh": "geglu_tanh",
             "gelu_new": "geglu_tanh", "gelu_fast": "geglu_tanh"}


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


def _rope(c: _Cfg, layer_type: str | None = None) -> float:
    """The RoPE base, from `rope_parameters` (5.x, per layer type for Gemma-3) or the legacy `rope_theta`."""
    rp = c.cfg.get("rope_parameters")
    if rp and layer_type and layer_type in rp:
        rp = rp[layer_type]
    if rp and "rope_type" in rp and rp["rope_type"] != "default":
        _refuse(c.model_type, "rope_parameters.rope_type", rp["rope_type"], "only the default rotary embedding")
    scaling = c.cfg.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        _refuse(c.model_type, "rope_scaling", scaling, "only the default rotary embedding")
    if rp and "rope_theta" in rp:
        return float(rp["rope_theta"])
    if layer_type == "sliding_attention":
        return float(c["rope_local_base_freq"])
    return float(c["rope_theta"])


def _mlp(c: _Cfg, key: str) -> str:
    act = c[key]
    if act not in GATED_MLP:
        _refuse(c.model_type, key, act, "gated MLP activations: " + ", ".join(GATED_MLP))
    return GATED_MLP[act]


def _attention(c: _Cfg) -> dict:
    heads = c["num_attention_heads"]
    return dict(hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=heads,
                kv_heads=c.get("num_key_value_heads") or heads,
                head_dim=c.get("head_dim") or c["hidden_size"] // heads)


def lm_spec(name: str, params: dict) -> dict:
    """A spec of one DecoderLM layer with id LM_ID over (B, T) token ids."""
    return {"name": name, "inputs": [{"name": "input_ids", "kind": "ids", "shape": ["B", "T"]}],
            "layers": [{"id": LM_ID, "type": "DecoderLM", "params": params}]}


# --- one function per model_type -------------------------------------------------------------------------------------
def _llama(cfg: dict) -> dict:
    c = _Cfg(cfg, "llama")
    p = dict(family="llama", vocab_size=c["vocab_size"], **_attention(c), ff_dim=c["intermediate_size"],
             mlp=_mlp(c, "hidden_act"), mlp_bias=bool(c["mlp_bias"]),
             attn_bias=["q", "k", "v", "o"] if c["attention_bias"] else [], norm_eps=float(c["rms_norm_eps"]),
             rope_theta=_rope(c), tie=bool(c["tie_word_embeddings"]))
    return lm_spec(cfg.get("_name_or_path") or "llama", p)


def _gemma3(cfg: dict) -> dict:
    """Gemma3Config (multimodal): its text model only."""
    text = dict(cfg.get("text_config") or {})
    text.setdefault("model_type", "gemma3_text")
    return _gemma3_text(text)


def _gemma3_text(cfg: dict) -> dict:
    c = _Cfg(cfg, "gemma3_text")
    for k in ("final_logit_softcapping", "attn_logit_softcapping"):
        if c[k] is not None:
            _refuse("gemma3_text", k, c[k], "no logit soft-capping")
    if c["use_bidirectional_attention"]:
        _refuse("gemma3_text", "use_bidirectional_attention", True, "causal decoders only")
    n = c["num_hidden_layers"]
    types = c["layer_types"] or ["sliding_attention" if (i + 1) % c["sliding_window_pattern"] else "full_attention"
                                 for i in range(n)]
    p = dict(family="gemma3", vocab_size=c["vocab_size"], **_attention(c), ff_dim=c["intermediate_size"],
             mlp=_mlp(c, "hidden_activation"), mlp_bias=False,
             attn_bias=["q", "k", "v", "o"] if c["attention_bias"] else [], norm_eps=float(c["rms_norm_eps"]),
             norm_offset=1.0, post_norms=True, qk_norm=True, scale_embeddings=True,
             query_pre_attn_scalar=float(c["query_pre_attn_scalar"]), layer_types=types,
             sliding_window=c["sliding_window"], rope_theta=_rope(c, "full_attention"),
             rope_theta_local=_rope(c, "sliding_attention"), tie=bool(c["tie_word_embeddings"]))
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
             conv_kernel=c["conv_L_cache"], conv_bias=bool(c["conv_bias"]), rope_theta=_rope(c), tie=bool(tie))
    return lm_spec(cfg.get("_name_or_path") or "lfm2", p)


def _qwen2_moe(cfg: dict) -> dict:
    c = _Cfg(cfg, "qwen2_moe")
    n = c["num_hidden_layers"]
    dense = [i for i in range(n) if i in (c["mlp_only_layers"] or []) or (i + 1) % c["decoder_sparse_step"]]
    if dense or not c["num_experts"]:
        _refuse("qwen2_moe", "mlp_only_layers/decoder_sparse_step", dense or c["num_experts"],
                "every layer must be a mixture-of-experts layer")
    types = c["layer_types"]
    if types is None:
        types = ["sliding_attention" if (i + 1) % 2 and i < c["max_window_layers"] and c["use_sliding_window"]
                 else "full_attention" for i in range(n)]
    shared = c["shared_expert_intermediate_size"]
    p = dict(family="qwen2_moe", vocab_size=c["vocab_size"], **_attention(c), mlp=_mlp(c, "hidden_act"),
             attn_bias=["q", "k", "v"] if c["qkv_bias"] else [], norm_eps=float(c["rms_norm_eps"]),
             layer_types=types, rope_theta=_rope(c), tie=bool(c["tie_word_embeddings"]),
             num_experts=c["num_experts"], top_k=c["num_experts_per_tok"], expert_dim=c["moe_intermediate_size"],
             norm_topk_prob=bool(c["norm_topk_prob"]))
    if shared is not None:             # 0 too: transformers still builds a zero-width expert and its gate
        p["shared_expert_dim"] = shared
    if "sliding_attention" in types:
        p["sliding_window"] = c["sliding_window"]
    return lm_spec(cfg.get("_name_or_path") or "qwen2_moe", p)


def _mixtral(cfg: dict) -> dict:
    c = _Cfg(cfg, "mixtral")
    window = c["sliding_window"]
    p = dict(family="mixtral", vocab_size=c["vocab_size"], **_attention(c), mlp=_mlp(c, "hidden_act"),
             attn_bias=[], norm_eps=float(c["rms_norm_eps"]), rope_theta=_rope(c),
             tie=bool(c["tie_word_embeddings"]), num_experts=c["num_local_experts"], top_k=c["num_experts_per_tok"],
             expert_dim=c["intermediate_size"], norm_topk_prob=True)
    if window:
        p.update(layer_types=["sliding_attention"] * c["num_hidden_layers"], sliding_window=window)
    return lm_spec(cfg.get("_name_or_path") or "mixtral", p)


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

# transformers' activation names -> the plain (two-matrix) MLP kinds of TransformerBlock
PLAIN_MLP = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
             "silu": "silu", "swish": "silu", "relu": "relu"}


def _side(c: _Cfg, key: str) -> int:
    """A square size (`image_size`, `patch_size`): an int, or a pair of equal ints."""
    v = c[key]
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or v[0] != v[1]:
            _refuse(c.model_type, key, v, "square images and patches only")
        v = v[0]
    return int(v)


def _plain_mlp(c: _Cfg, key: str = "hidden_act") -> str:
    act = c[key]
    if act not in PLAIN_MLP:
        _refuse(c.model_type, key, act, "MLP activations: " + ", ".join(PLAIN_MLP))
    return PLAIN_MLP[act]


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
    "gemma3_text": _gemma3_text,
    "gemma3": _gemma3,
    "lfm2": _lfm2,
    "qwen2_moe": _qwen2_moe,
    "mixtral": _mixtral,
    "siglip_vision_model": _siglip_vision,
    "siglip2_vision_model": _siglip2_vision,
    "siglip": _siglip_full,
    "siglip2": _siglip_full,
    "dinov2": _dinov2,
    "dinov3_vit": _dinov3_vit,
}

# key maps (the names real checkpoints use -> the spec's) are data in compiler/importers/keymaps.py, one per family
from .keymaps import KEY_MAPS, Merge, key_map  # noqa: E402


def _expert_merges(model_type: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(r.pattern, r.target, r.parts) for r in KEY_MAPS.get(model_type, []) if isinstance(r, Merge) and r.experts]


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


def hf_expert_merges(model_type: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """The per-expert -> stacked merges of `model_type` as (regex, target, parts) (`runtime_torch.ops.moe.
    merge_experts`'s form; the key map itself already holds them as Merge rules)."""
    return _expert_merges(model_type)


def import_hf(config_path: str, out_path: str) -> dict:
    """Read a config.json, write its spec as JSON to `out_path`, return the spec."""
    with open(config_path, encoding="utf-8") as f:
        spec = spec_from_hf_config(json.load(f))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")
    return spec
