"""Full-size parameter counts of the shipped specs, component by component, against transformers on the meta device.

Every component that has a transformers reference is counted both ways and must agree exactly (0 difference), and
its tensor names and shapes must be the reference's under the component's id (through the spec's key map where
there is one). Components without a reference (projectors, connectors, heads, resampler, flow head, decoder) are
checked against their hand-derived formulas. The seed documents' numbers are checked last: the ones that hold within
their stated rounding, and the ones that do not (docs/seed-audit.md says why).
Conventions: `sum(p.numel() for p in model.parameters())` (tied tensors once), transformers 5.x classes built under
`torch.device("meta")` with the configs of docs/hf-reference-notes.md.
"""
from __future__ import annotations

import functools
import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

import compiler  # noqa: E402
from compiler.cost import node_weights  # noqa: E402
from tests.shrink import ROOT  # noqa: E402

T = transformers
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0,
                    rms_norm_eps=1e-5)
SMOLLM2_360M = dict(SMOLLM2_135M, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                    num_attention_heads=15, num_key_value_heads=5)
GEMMA3_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                   sliding_window=512, tie_word_embeddings=True,
                   layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3)
SIGLIP = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16,
              vision_use_head=False)
SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=384,
              patch_size=16, vision_use_head=False)
DINOV3 = dict(num_register_tokens=4, layerscale_value=1.0, rope_theta=100.0, patch_size=16, image_size=224)
DINOV3_S16P = dict(DINOV3, hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                   use_gated_mlp=True, hidden_act="silu")
DINOV3_L16 = dict(DINOV3, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  use_gated_mlp=False, hidden_act="gelu")
DINOV2_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, image_size=518,
                    patch_size=14, layerscale_value=1.0)
LFM2_1_2B = dict(vocab_size=65536, hidden_size=2048, intermediate_size=12288, num_hidden_layers=16,
                 num_attention_heads=32, num_key_value_heads=8, full_attn_idxs=[2, 5, 8, 10, 12, 14], conv_L_cache=3,
                 conv_bias=False, block_multiple_of=256, block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True,
                 norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=True)
# OMNI-LITE's backbone has no published model; Mixtral's decoder layer is the same block (GQA, RoPE, 16 SwiGLU
# experts of 768, top 2, router without bias, RMSNorm), so MixtralForCausalLM counts embedding + backbone + head
OMNI_MIXTRAL = dict(vocab_size=32000, hidden_size=2048, intermediate_size=768, num_hidden_layers=24,
                    num_attention_heads=32, num_key_value_heads=8, num_local_experts=16, num_experts_per_tok=2,
                    tie_word_embeddings=False)


@functools.lru_cache(maxsize=None)
def _hf(model: str, config: str, kw_json: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        m = getattr(T, model)(getattr(T, config)(**json.loads(kw_json)))
    return {n: tuple(p.shape) for n, p in m.named_parameters()}


def hf_kw(model: str, config: str, kw: dict) -> dict[str, tuple[int, ...]]:
    """{name: shape} of a transformers model built on meta; tied tensors once (as parameters() yields them)."""
    return _hf(model, config, json.dumps(kw, sort_keys=True))


@functools.lru_cache(maxsize=None)
def compiled(path: str):
    c = compiler.compile(os.path.join(ROOT, path))
    assert c.ok, c.errors
    return c


def ours(path: str, prefix: str) -> dict[str, tuple[int, ...]]:
    """{name relative to prefix: shape} of the spec's owned tensors whose full names start with `prefix.`."""
    out = {}
    for n in compiled(path).graph.nodes():
        for k, w in node_weights(n).items():
            if not w.tied_to and k.startswith(prefix + "."):
                out[k[len(prefix) + 1:]] = tuple(w.shape)
    return out


def count(shapes: dict) -> int:
    total = 0
    for s in shapes.values():
        n = 1
        for d in s:
            n *= d
        total += n
    return total


def same(mine: dict, ref: dict, rename=lambda k: k):
    ref = {rename(k): s for k, s in ref.items()}
    assert mine == ref, (sorted(set(mine) ^ set(ref))[:10], [k for k in mine if k in ref and mine[k] != ref[k]][:5])
    return count(mine)


def llama(vocab, base):
    return dict(base, vocab_size=vocab)


def dinov3_saved(k: str) -> str:
    """DINOv3ViTModel's in-memory `model.layer.{i}` is `layer.{i}` in its checkpoints (and in the spec)."""
    return k.replace("model.layer.", "layer.", 1)


def siglip_saved(k: str) -> str:
    """SiglipVisionModel's in-memory names lack the checkpoints' `vision_model.` (the VisionEncoder ids keep it)."""
    return "vision_model." + k


def dinov2_4x(k: str) -> str:
    for a, b in (("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
                 ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense")):
        k = k.replace(a, b)
    return k


# --- components against transformers -----------------------------------------------------------------------------------
CASES = [
    # (spec, node prefix, transformers model, config, kwargs, rename of the reference's names, exact count)
    ("specs/oculus.json", "dinov3", "DINOv3ViTModel", "DINOv3ViTConfig", DINOV3_L16, dinov3_saved, 303_129_600),
    ("specs/oculus.json", "siglip2", "SiglipVisionModel", "SiglipVisionConfig", SO400M, siglip_saved,
     413_018_352),
    ("specs/oculus.json", "lm", "Lfm2ForCausalLM", "Lfm2Config", LFM2_1_2B, None, 1_170_340_608),
    ("specs/nanovlm/original_small.json", "vision_encoder", "SiglipVisionModel", "SiglipVisionConfig",
     dict(SIGLIP, image_size=224), "nanovlm", 85_797_120),
    ("specs/nanovlm/default.json", "vision_encoder", "SiglipVisionModel", "SiglipVisionConfig",
     dict(SIGLIP, image_size=512), "nanovlm", 86_433_024),
    ("specs/nanovlm/original_small.json", "decoder", "LlamaForCausalLM", "LlamaConfig",
     llama(49280, SMOLLM2_135M), "nanovlm", 134_515_008 + 128 * 576),
    ("specs/nanovlm/default.json", "decoder", "LlamaForCausalLM", "LlamaConfig",
     llama(49280, SMOLLM2_360M), "nanovlm", 361_821_120 + 128 * 960),
    ("specs/nanovlm/dinov3_gemma.json", "vision_encoder", "DINOv3ViTModel", "DINOv3ViTConfig", DINOV3_S16P,
     dinov3_saved, 28_692_864),
    ("specs/nanovlm/dinov3_gemma.json", "decoder", "Gemma3ForCausalLM", "Gemma3TextConfig",
     dict(GEMMA3_270M, vocab_size=262272), None, 268_098_176 + 128 * 640),
    ("specs/fvlm_135m.json", "fvlm.encoder.dino", "Dinov2Model", "Dinov2Config", DINOV2_SMALL, dinov2_4x,
     22_056_576),
    ("specs/fvlm_135m.json", "fvlm.llm", "LlamaForCausalLM", "LlamaConfig", SMOLLM2_135M, None, 134_515_008),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].split('/')[-1]}:{c[1]}")
def test_component_equals_transformers(case):
    path, prefix, model, config, kw, rename, exact = case
    ref = hf_kw(model, config, kw)
    if rename == "nanovlm":            # nanoVLM's module tree: compare counts (its names are checked by the importer)
        got = count(ours(path, prefix))
        assert got == count(ref) == exact
        return
    got = same(ours(path, prefix), ref, rename or (lambda k: k))
    assert got == count(ref) == exact


def test_omni_lite_text_path_equals_mixtral():
    mine = {**{"model.embed_tokens." + k: s for k, s in ours("specs/omni_lite.json", "embed").items()},
            **{"model.norm." + k: s for k, s in ours("specs/omni_lite.json", "norm").items()},
            **{"lm_head." + k: s for k, s in ours("specs/omni_lite.json", "lm_head").items()}}
    backbone = ours("specs/omni_lite.json", "backbone")
    ref = hf_kw("MixtralForCausalLM", "MixtralConfig", OMNI_MIXTRAL)
    assert count(mine) + count(backbone) == count(ref) == 2_195_556_352


def test_fvlm_total_is_dinov2_small_plus_smollm2_plus_connector():
    connector = (384 * 384                      # encoder.query_input_proj (no bias)
                 + 384 * 384 + 384              # encoder.output_proj
                 + 384 * 576 + 576              # dino_to_llm
                 + 576 * 384 + 384              # llm_to_query
                 + 2 * 384)                     # q_static, q_init
    assert connector == 739_392
    assert count(ours("specs/fvlm_135m.json", "fvlm")) == 22_056_576 + 134_515_008 + connector
    assert compiled("specs/fvlm_135m.json").report["params"]["total"] == 157_310_976


# --- parts without a reference: their formulas ------------------------------------------------------------------------
FORMULAS = [
    ("specs/oculus.json", "projector", 2176 * 4352 + 4352 + 4352 * 2048 + 2048),            # 18,389,248
    ("specs/oculus.json", "heads.segmentation", 2176 * 256 + 256 + 256 * 150 + 150),       # 595,862
    ("specs/oculus.json", "heads.classification", 2176 * 256 + 256 + 256 * 1000 + 1000),   # 814,312
    ("specs/oculus.json", "heads.detection", 2176 * 256 + 256 + 256 * 9 * 84 + 9 * 84),    # 751,604
    ("specs/oculus.json", "heads.ocr", 2176 * 128 + 128 + 128 * 9 + 128 + 128 * 32 + 32 + 128 * 4 + 4),
    ("specs/nanovlm/original_small.json", "MP", 768 * 4 * 576),                            # 1,769,472
    ("specs/nanovlm/default.json", "MP", 768 * 16 * 960),                                  # 11,796,480
    ("specs/nanovlm/dinov3_gemma.json", "MP", 384 * 4 * 640),                              # 983,040
    ("specs/omni_lite.json", "resampler",
     64 * 2048 + 1024 * 2048 + 2048 + 2 * (3 * 2 * 2048 + 4 * 2048 * 2048 + 2 * 2048 * 8192) + 2 * 2048),
    ("specs/omni_lite.json", "backbone", 24 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 2 * 2048 + 16 * 2048
                                              + 16 * 3 * 2048 * 768)),
]


@pytest.mark.parametrize("case", FORMULAS, ids=lambda c: f"{c[0].split('/')[-1]}:{c[1]}")
def test_part_equals_its_formula(case):
    path, prefix, want = case
    assert count(ours(path, prefix)) == want


def test_omni_lite_active_backbone():
    nodes = compiler.compile(os.path.join(ROOT, "specs/omni_lite.json"), with_nodes=True).report["nodes"]
    active = sum(n["active"] for n in nodes if n["name"].startswith("backbone."))
    assert active == 24 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 2 * 2048 + 16 * 2048 + 2 * 3 * 2048 * 768) \
        == 479_035_392


# --- the documents' numbers ---------------------------------------------------------------------------------------------
def total(path):
    return compiled(path).report["params"]["total"]


HOLD = [   # (what, claimed, computed, relative tolerance of the claim's rounding)
    ("nanoVLM original_small ~222M", 222e6, lambda: total("specs/nanovlm/original_small.json"), 0.005),
    ("nanoVLM original_small SigLIP-B/16-224 85.8M", 85.8e6,
     lambda: count(ours("specs/nanovlm/original_small.json", "vision_encoder")), 0.001),
    ("nanoVLM original_small SmolLM2-135M 134.6M", 134.6e6,
     lambda: count(ours("specs/nanovlm/original_small.json", "decoder")), 0.001),
    ("nanoVLM original_small projector ~1.8M", 1.8e6,
     lambda: count(ours("specs/nanovlm/original_small.json", "MP")), 0.02),
    ("nanoVLM default 460M (help text)", 460e6, lambda: total("specs/nanovlm/default.json"), 0.001),
    ("fVLM-135M 157.6M", 157.6e6, lambda: total("specs/fvlm_135m.json"), 0.002),
    ("Oculus SigLIP2 ~400M", 400e6, lambda: count(ours("specs/oculus.json", "siglip2")), 0.05),
    ("Oculus LFM2.5 ~1.2B", 1.2e9, lambda: count(ours("specs/oculus.json", "lm")), 0.05),
    ("OMNI-LITE 2.5B capacity", 2.5e9, lambda: total("specs/omni_lite.json"), 0.05),
]
WRONG = [  # (what, claimed, computed, the relative difference at least)
    ("nanoVLM default ~450M (presets page)", 450e6, lambda: total("specs/nanovlm/default.json"), 0.02),
    ("nanoVLM default SigLIP2-B/16-512 85.8M", 85.8e6,
     lambda: count(ours("specs/nanovlm/default.json", "vision_encoder")), 0.007),
    ("Oculus total ~3.8B", 3.8066e9, lambda: total("specs/oculus.json"), 0.4),
    ("Oculus DINOv3 ViT-L ~1.7B", 1.7e9, lambda: count(ours("specs/oculus.json", "dinov3")), 0.8),
    ("Oculus projector ~5M", 5e6, lambda: count(ours("specs/oculus.json", "projector")), 2.0),
    ("Oculus classification head 0.3M", 0.3e6, lambda: count(ours("specs/oculus.json", "heads.classification")), 1.0),
    ("Oculus detection head 0.5M", 0.5e6, lambda: count(ours("specs/oculus.json", "heads.detection")), 0.4),
    ("Oculus segmentation head 0.5M", 0.5e6, lambda: count(ours("specs/oculus.json", "heads.segmentation")), 0.15),
]


@pytest.mark.parametrize("claim", HOLD, ids=lambda c: c[0])
def test_document_number_holds(claim):
    what, claimed, got, tol = claim
    assert abs(got() - claimed) / claimed <= tol, (what, got())


@pytest.mark.parametrize("claim", WRONG, ids=lambda c: c[0])
def test_document_number_is_off(claim):
    what, claimed, got, least = claim
    assert abs(got() - claimed) / claimed >= least, (what, got())
