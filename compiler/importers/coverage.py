"""What `omnic import-hf` covers, per family, as data: the README's family table (scripts/readme_tables.py renders
it; tests/test_readme_tables.py checks every row against the tests it names and the counts they assert).

A row: the transformers `model_type`s it imports; where the torch and MLX outputs are compared with transformers'
(a test module, the dict of cases in it, the case's key; None: not compared directly, with what stands in for it in
`mlx_note`); one published config whose full-size count equals transformers' meta-device count (module, dict, key,
the count); and what the importer refuses, and why. `pending` rows are families another change adds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

Ref = tuple[str, str, str]          # (test module, its dict of cases (or a function returning it), key)


@dataclass(frozen=True)
class Row:
    family: str
    model_types: tuple[str, ...]
    torch: Optional[Ref]
    mlx: Optional[Ref]
    count: Optional[tuple[str, str, str, int]]      # (test module, dict, published config, parameters)
    refused: str
    mlx_note: str = ""
    pending: str = ""


HF = "tests.hf_models"
CKPT = "tests.test_checkpoints"
VISION = "tests.test_parity_vision"
MOE = "tests.test_moe_families"
MOE_MLX = "tests.test_moe_families_mlx"
MAMBA = "tests.test_mamba2"
ACTS = "an activation outside compiler/activations.py"
ROPE = "a rope type or rope key transformers' rope utilities do not define"

ROWS: tuple[Row, ...] = (
    Row("Llama / SmolLM2 / Llama-3.x", ("llama",), (HF, "DENSE", "llama"), (HF, "DENSE", "llama3"),
        (HF, "FULL", "Llama-3.2-1B", 1_235_814_400), f"{ACTS}; {ROPE}"),
    Row("Qwen2", ("qwen2",), (HF, "DENSE", "qwen2"), (HF, "DENSE", "qwen2"),
        (HF, "FULL", "Qwen2.5-0.5B", 494_032_768), f"{ACTS}; {ROPE}"),
    Row("Qwen3", ("qwen3",), (HF, "DENSE", "qwen3"), (HF, "DENSE", "qwen3"),
        (HF, "FULL", "Qwen3-0.6B", 596_049_920), f"{ACTS}; {ROPE}"),
    Row("Mistral", ("mistral",), (HF, "DENSE", "mistral"), (HF, "DENSE", "mistral"),
        (HF, "FULL", "Mistral-7B-v0.1", 7_241_732_096), f"{ACTS}; {ROPE}"),
    Row("Gemma-2", ("gemma2",), (HF, "DENSE", "gemma2"), (HF, "DENSE", "gemma2"),
        (HF, "FULL", "gemma-2-2b", 2_614_341_888),
        f"use_bidirectional_attention (causal decoders only); {ACTS}; {ROPE}"),
    Row("Gemma-3 (text; multimodal configs: the text model)", ("gemma3_text", "gemma3"),
        (HF, "DENSE", "gemma3"), (HF, "DENSE", "gemma3-linear"),
        (HF, "FULL", "gemma-3-4b (text)", 3_880_263_168),
        f"use_bidirectional_attention (causal decoders only); the vision tower of gemma3 (dropped by the key map); "
        f"{ACTS}; {ROPE}"),
    Row("Phi-3", ("phi3",), (HF, "DENSE", "phi3-longrope"), (HF, "DENSE", "phi3-longrope"),
        (HF, "FULL", "Phi-3-mini-4k", 3_821_079_552), f"{ACTS}; {ROPE}"),
    Row("SmolLM3", ("smollm3",), (HF, "DENSE", "smollm3"), (HF, "DENSE", "smollm3"),
        (HF, "FULL", "SmolLM3-3B", 3_075_098_624), f"{ACTS}; {ROPE}"),
    Row("OLMo-2", ("olmo2",), (HF, "DENSE", "olmo2"), (HF, "DENSE", "olmo2"),
        (HF, "FULL", "OLMo-2-1124-7B", 7_298_617_344), f"{ACTS}; {ROPE}"),
    Row("LFM2", ("lfm2",), (HF, "TINY", "lfm2"), (HF, "DENSE", "lfm2"),
        (HF, "FULL", "LFM2-1.2B", 1_170_340_608), ROPE),
    Row("Qwen2-MoE (dense layers mixed in: decoder_sparse_step, mlp_only_layers)", ("qwen2_moe",),
        (MOE, "TINY", "qwen2_moe_mixed"), (MOE_MLX, "TINY", "qwen2_moe_mixed"),
        (MOE, "FULL", "Qwen1.5-MoE-A2.7B", 14_315_784_192),
        f"no layer with experts; {ACTS}; {ROPE}"),
    Row("Mixtral", ("mixtral",), (HF, "TINY", "mixtral"), (CKPT, "TINY", "mixtral"),
        (HF, "FULL", "Mixtral-8x7B-v0.1", 46_702_792_704), f"{ACTS}; {ROPE}"),
    Row("Mamba-2", ("mamba2",), (MAMBA, "CASES", "tiny"), (MAMBA, "CASES", "tiny"),
        (MAMBA, "COUNTS", "mamba2-130m", 128_989_632),
        "a clamped time_step_limit; an activation other than silu"),
    Row("SigLIP / SigLIP2 vision (full configs: the vision tower)",
        ("siglip_vision_model", "siglip2_vision_model", "siglip", "siglip2"), (VISION, "__dict__", "test_siglip"),
        (CKPT, "VISION", "siglip"), (VISION, "_counts", "SigLIP2-SO400M/16-384", 428_256_704),
        "non-square images or patches; a non-square NaFlex position table; the text tower (dropped)"),
    Row("DINOv2 (SwiGLU too)", ("dinov2",), (VISION, "__dict__", "test_dinov2"), (CKPT, "VISION", "dinov2_swiglu"),
        (VISION, "_counts", "DINOv2-small", 22_056_576), "non-square images or patches"),
    Row("DINOv3 ViT", ("dinov3_vit",), (VISION, "__dict__", "test_dinov3"), (CKPT, "VISION", "dinov3"),
        (VISION, "_counts", "DINOv3 ViT-L/16", 303_129_600), "non-square images or patches"),
    Row("Qwen3-MoE", ("qwen3_moe",), (MOE, "TINY", "qwen3_moe"), (MOE_MLX, "TINY", "qwen3_moe_mixed"),
        (MOE, "FULL", "Qwen3-30B-A3B", 30_532_122_624), f"no layer with experts; {ACTS}; {ROPE}"),
    Row("DeepSeek-V3 (latent attention, latent KV cache, group-limited routing, yarn)", ("deepseek_v3",),
        (MOE, "TINY", "deepseek_v3"), (MOE_MLX, "TINY", "deepseek_v3"), (MOE, "FULL", "DeepSeek-V3", 671_026_404_352),
        f"num_key_value_heads != num_attention_heads; {ACTS}; {ROPE}"),
)


def _ref(ref: Optional[Ref], note: str = "") -> str:
    if ref is None:
        return note or "no"
    # tests/hf_models.py holds the cases; the tests that compare them are test_parity_dense.py and test_parity_lm.py
    hf_tests = {"DENSE": "test_parity_dense.py", "TINY": "test_parity_lm.py"}
    test = hf_tests[ref[1]] if ref[0] == HF else ref[0].split(".")[-1] + ".py"
    return f"yes (`{test}` {ref[2]})"


def table() -> str:
    """The README's family table (Markdown)."""
    rows = ["| family (`model_type`) | import | torch = transformers | MLX = transformers | exact count "
            "(transformers, meta device) | refused, and why |", "|---|---|---|---|---|---|"]
    for r in ROWS:
        types = ", ".join(f"`{t}`" for t in r.model_types)
        if r.pending:
            rows.append(f"| {r.family} ({types}) | pending | pending | pending | pending | {r.pending} |")
            continue
        count = f"{r.count[2]}: {r.count[3]:,}" if r.count else "no"
        rows.append(f"| {r.family} ({types}) | yes | {_ref(r.torch)} | {_ref(r.mlx, r.mlx_note)} | {count} | "
                    f"{r.refused or 'nothing known'} |")
    return "\n".join(rows)
