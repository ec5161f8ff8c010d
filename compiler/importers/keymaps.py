"""Key maps: the tensor names real checkpoints use, per family, mapped to omnic's names. Data, shared by every importer.

A family's key map is a list of rules applied in order to every name of a checkpoint (runtime_common/checkpoint.py
runs them, for files and for in-memory state dicts, in both runtimes):
  (regex, replacement)   a rename with `re.sub`; a replacement of None drops the tensors the regex matches
  Merge(...)             several tensors become one: parts concatenated along dim 0 (gate|up), and per-expert
                         tensors stacked into (E, ...) (Mixtral / Qwen2-MoE / Qwen3-MoE / DeepSeek-V3 hub
                         checkpoints -> transformers 5.x)
  Split(...)             one tensor becomes several, chunked along `dim`; each chunk's size is the model's size of
                         the name it becomes (so unequal q|k|v splits need no numbers here), else equal chunks
  Tied(name, target)     a tied copy the model does not hold: dropped, or standing for `target` if that is absent
Every naming generation a family's files use maps to the same omnic names, so a checkpoint in any of them loads
strictly (nothing missing, unexpected or mis-shaped):
  - transformers 4.x hub names, which transformers 5.x `save_pretrained` still writes (it reverses its load-time
    renames: DINOv2's `attention.attention.query`, DINOv3 without `model.`, per-expert MoE tensors in old files);
  - transformers 5.x in-memory names (`model.state_dict()`: DINOv2's `attention.q_proj`, DINOv3's `model.layer.`,
    stacked `mlp.experts.gate_up_proj`);
  - the base model's names and the task heads' (`ForCausalLM`'s `model.` + `lm_head`, `ForImageClassification`'s
    `dinov2.` + `classifier`, whose classifier omnic does not hold and drops);
  - fused and split q|k|v / gate|up where a family's files come both ways (DINOv2 SwiGLU's `mlp.weights_in`).
Sources: transformers 5.x `conversion_mapping.py` (the renames it applies on load), each family's modeling file.

To add a family: one entry in KEY_MAPS, from the rule lists below (`_lm(...)` for a decoder under "lm."). Names a
family's files use that omnic declares differently go in that entry, never in a loader.
Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

LM_ID = "lm"                 # the DecoderLM layer id of imported language models (compiler/importers/hf.py)
VISION_ID = "vision"         # the VisionEncoder layer id of imported vision towers


@dataclass(frozen=True)
class Merge:
    """Tensors whose names match `pattern` become one tensor named `target` (a replacement template of `pattern`).

    `pattern`'s groups: 1 the part of the name kept by `target`; with `experts`, 2 the expert index and 3 the part;
    without, 2 the part. The parts (named in `parts`, in this order) are concatenated along dim 0; with `experts`
    the concatenations are stacked into a new leading dim of the experts in index order (all of 0..E-1 required)."""
    pattern: str
    target: str
    parts: tuple[str, ...]
    experts: bool = True


@dataclass(frozen=True)
class Split:
    """A tensor whose name matches `pattern` becomes len(targets) tensors (replacement templates of `pattern`),
    chunked along `dim` in order; each chunk as wide as the model's tensor of that name (equal chunks otherwise)."""
    pattern: str
    targets: tuple[str, ...]
    dim: int = 0


@dataclass(frozen=True)
class Tied:
    """A tied copy a model does not hold (fVLM's head reads the embedding): the tensor named `name` is dropped when
    the checkpoint has `target`, and stands for `target` when it has not (safetensors' `save_model` keeps either
    name of a shared tensor)."""
    name: str
    target: str


Rule = Union[tuple[str, Optional[str]], Merge, Split, Tied]

# --- decoders (a DecoderLM with id "lm": omnic's names are the ForCausalLM names under "lm.") -------------------------
_ROTARY_BUFFERS = [(r"(^|\.)rotary_emb\.inv_freq$", None)]        # 4.x-era files that kept the rotary buffer


def _lm(*rules: Rule) -> list[Rule]:
    """A ForCausalLM's key map: `rules` on its names, then base-model files (`LlamaModel.save_pretrained`:
    `layers.0...`, no `model.`, no head) get `model.`, then everything goes under LM_ID."""
    return [*_ROTARY_BUFFERS, *rules, (r"^(?!model\.|lm_head\.)", "model."), (r"^", LM_ID + ".")]


# per-expert hub tensors -> transformers 5.x's stacked (E, 2F, D) gate|up and (E, D, F) down
MIXTRAL_EXPERTS = [
    Merge(r"^(.*)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w3)\.weight$", r"\1.mlp.experts.gate_up_proj", ("w1", "w3")),
    Merge(r"^(.*)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w2)\.weight$", r"\1.mlp.experts.down_proj", ("w2",)),
]
QWEN2_MOE_EXPERTS = [
    Merge(r"^(.*)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj)\.weight$", r"\1.mlp.experts.gate_up_proj",
          ("gate_proj", "up_proj")),
    Merge(r"^(.*)\.mlp\.experts\.(\d+)\.(down_proj)\.weight$", r"\1.mlp.experts.down_proj", ("down_proj",)),
]

# Gemma3ForConditionalGeneration: the text model only (vision tower and projector dropped); 5.x names
# `model.language_model.*` + `lm_head`, 4.x hub names `language_model.model.*` + `language_model.lm_head`
_GEMMA3_MULTIMODAL = [
    (r"^(model\.)?(vision_tower|multi_modal_projector)\.", None),
    (r"^model\.language_model\.", "model."),
    (r"^language_model\.", ""),
]

# --- vision towers (a VisionEncoder with id "vision") -----------------------------------------------------------------
# DINOv2 blocks: omnic keeps the hub names (attention.attention.query, ...); transformers 5.x in memory renames them
# (conversion_mapping "Dinov2Model"). SwiGLU (giant): 5.x gate_proj/up_proj/down_proj, which omnic keeps; the hub
# files fuse gate|up as mlp.weights_in (gate first: transformers' Chunk(dim=0)) and call down mlp.weights_out.
# Unanchored, so fVLM's `encoder.dino.` names use the same rules (compiler/importers/fvlm.py).
DINOV2_BLOCKS: list[Rule] = [
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    Split(r"^(.*\.layer\.\d+\.mlp)\.weights_in\.(weight|bias)$", (r"\1.gate_proj.\2", r"\1.up_proj.\2")),
    (r"(\.layer\.\d+\.mlp)\.weights_out\.", r"\1.down_proj."),
]

# Siglip(2)Model / Siglip(2)ForImageClassification: the vision tower's keys (text tower, logit scale and bias,
# classifier dropped); the vision model alone has no `vision_model.` prefix in its files
_SIGLIP_FULL = [(r"^(?!vision_model\.)", None), (r"^vision_model\.", VISION_ID + ".vision_model.")]

KEY_MAPS: dict[str, list[Rule]] = {
    "llama": _lm(),
    **{t: _lm() for t in ("qwen2", "qwen3", "mistral", "gemma2", "smollm3", "olmo2")},
    "phi3": _lm(),                   # its files fuse q|k|v (qkv_proj) and gate|up as omnic's phi3 names do
    "lfm2": _lm(),
    "gemma3_text": _lm(),
    "gemma3": _lm(*_GEMMA3_MULTIMODAL),
    "qwen2_moe": _lm(*QWEN2_MOE_EXPERTS),
    "qwen3_moe": _lm(*QWEN2_MOE_EXPERTS),           # the same per-expert names as Qwen2-MoE
    # DeepSeek-V3's hub files also hold its multi-token-prediction layer (model.layers.61), which transformers
    # skips on load (_keys_to_ignore_on_load_unexpected) and does not build: dropped the same way. Its routed
    # experts have Qwen2-MoE's per-expert names (the shared ones, `mlp.shared_experts.`, are one MLP each)
    "deepseek_v3": _lm((r"^(model\.)?layers\.61\.", None), *QWEN2_MOE_EXPERTS),
    "mixtral": _lm((r"\.block_sparse_moe\.", ".mlp."), *MIXTRAL_EXPERTS),
    # Mamba2ForCausalLM (a Mamba2LM with id "lm"): base-model files (Mamba2Model: `embeddings.`, `layers.`,
    # `norm_f.`) get `backbone.`; `embedding.` is the older name transformers' load hook renames
    "mamba2": [(r"^(?!backbone\.|lm_head\.)", "backbone."), (r"^backbone\.embedding\.", "backbone.embeddings."),
               (r"^", LM_ID + ".")],
    "siglip_vision_model": [(r"^vision_model\.", ""), (r"^", VISION_ID + ".vision_model.")],
    "siglip2_vision_model": [(r"^vision_model\.", ""), (r"^", VISION_ID + ".vision_model.")],
    "siglip": _SIGLIP_FULL,
    "siglip2": _SIGLIP_FULL,
    # Dinov2ForImageClassification: `dinov2.` prefix, classifier dropped
    "dinov2": [(r"^classifier\.", None), (r"^dinov2\.", ""), *DINOV2_BLOCKS, (r"^", VISION_ID + ".")],
    # 5.x in memory: `model.layer.N` (conversion_mapping "dinov3_vit"); files: `layer.N`
    "dinov3_vit": [(r"^model\.layer\.", "layer."), (r"^", VISION_ID + ".")],
}


# --- the seed systems' own checkpoints -------------------------------------------------------------------------------
# nanoVLM (huggingface/nanoVLM): the specs keep its names; its persistent rotary buffer and anything outside the
# three modules are dropped (compiler/importers/nanovlm.py)
NANOVLM = [(r"^(?!vision_encoder\.|MP\.|decoder\.)", None), (r"(^|\.)inv_freq$", None)]


def fvlm(node: str = "fvlm", tied: bool = True) -> list[Rule]:
    """fVLM (spsanps/nanoSmol): a FoveatedVLM node declaring the checkpoint's names (compiler/importers/fvlm.py);
    a tied head is dropped (the node reads the embedding), its DINOv2 takes DINOV2_BLOCKS, all under `node`."""
    return [*([Tied("llm.lm_head.weight", "llm.model.embed_tokens.weight")] if tied else []), *DINOV2_BLOCKS,
            (r"^", node + ".")]


KEY_MAPS.update({"nanovlm": NANOVLM, "fvlm": fvlm()})


def key_map(family: str) -> list[Rule]:
    """The rules of `family` (a transformers model_type, or a seed system's family in compiler/importers)."""
    if family not in KEY_MAPS:
        raise ValueError(f"no key map for {family!r}; known: {', '.join(sorted(KEY_MAPS))}")
    return list(KEY_MAPS[family])
