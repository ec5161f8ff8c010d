"""Import transformers configs (config.json as a dict) into omnic specs, and the key maps for their checkpoints.

`spec_from_hf_config(config)` dispatches on `config["model_type"]` through IMPORTERS (model_type -> function
returning a whole spec). Language models become one `DecoderLM` layer (id "lm", see compiler/ops/lm.py) whose
parameters are all written out, so the spec says everything and does not lean on the family presets; a
transformers state dict then loads with `hf_key_map(model_type)` (prefix "" -> "lm.").
Missing config keys take the defaults of transformers 5.x's config classes (DEFAULTS, data); legacy spellings
(`rope_theta`, `rope_scaling`, `full_attn_idxs`, `block_ff_dim`, `tie_embedding`) are read as transformers reads
them. What omnic cannot run (rope scaling, logit soft-capping, dense layers among MoE layers) is refused with a
ValueError that names the key.

Extension point (vision encoders): write `def _siglip(cfg: dict) -> dict` returning a spec and add
`"siglip": _siglip` to IMPORTERS (and its map to KEY_MAPS); nothing else changes.
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


# --- one function per model_type ---------------------------------------------------------------------------------------
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
    if shared:
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


IMPORTERS: dict[str, Callable[[dict], dict]] = {
    "llama": _llama,
    "gemma3_text": _gemma3_text,
    "gemma3": _gemma3,
    "lfm2": _lfm2,
    "qwen2_moe": _qwen2_moe,
    "mixtral": _mixtral,
}

# model_type -> {checkpoint key prefix: omnic key prefix}, applied longest prefix first
KEY_MAPS: dict[str, dict[str, str]] = {
    **{t: {"": LM_ID + "."} for t in ("llama", "gemma3_text", "lfm2", "qwen2_moe", "mixtral")},
    # Gemma3ForConditionalGeneration: the text model's keys (the vision tower's have no counterpart)
    "gemma3": {"model.language_model.": LM_ID + ".model.", "lm_head.": LM_ID + ".lm_head."},
}


def spec_from_hf_config(config: dict) -> dict:
    """The omnic spec of a transformers config (the parsed config.json)."""
    mt = config.get("model_type")
    if mt not in IMPORTERS:
        raise ValueError(f"unsupported model_type {mt!r}; supported: {', '.join(sorted(IMPORTERS))}")
    return IMPORTERS[mt](config)


def hf_key_map(model_type: str) -> dict[str, str]:
    """Prefix renames from a transformers state dict of `model_type` to the imported spec's weight names."""
    if model_type not in KEY_MAPS:
        raise ValueError(f"no key map for model_type {model_type!r}; known: {', '.join(sorted(KEY_MAPS))}")
    return dict(KEY_MAPS[model_type])


def import_hf(config_path: str, out_path: str) -> dict:
    """Read a config.json, write its spec as JSON to `out_path`, return the spec."""
    with open(config_path, encoding="utf-8") as f:
        spec = spec_from_hf_config(json.load(f))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")
    return spec
