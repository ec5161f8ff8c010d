"""Storage formats: bits per weight (scales included) and which tensors quantisers leave in 16-bit.

Source: shared accounting reference. bitsandbytes (int8, NF4) and GPTQ/AWQ replace Linear layers only: embeddings,
the LM head, convolutions, norms and biases stay 16-bit. MLX `nn.quantize` also quantises embeddings and the head
(Linear and Embedding layers). GGUF quantises every 2-D weight; norms stay 32-bit.

The formats omnic builds (`omnic build --quantize`, `compiler/quantise.py`) are defined by the bytes those builds
hold, checked tensor by tensor against the saved files and the live arrays (tests/test_quant_*.py):
  mlx-4bit, mlx-8bit     `mlx.nn.quantize` (affine): per group of `group` weights along a row, packed `bits`-bit
                         values plus a scale and a bias in the 16-bit dtype of the model (2 x 16 bits per group);
                         variants of another group size are named `mlx-4bit-g32`, `mlx-8bit-g128`, ...
  torchao-int8           torchao `Int8WeightOnlyConfig` (0.14): int8 weights plus, per output row, a scale in the
                         model's dtype (16 bits) and an int64 zero point (64 bits)
  torchao-int4           torchao `Int4WeightOnlyConfig` with the CPU packing (0.14, `opaque`), group 128: two
                         weights per byte plus a (scale, zero) pair in the model's dtype per group; `torchao-int4-g64`
  q8_0                   GGUF Q8_0 as the `gguf` package writes it: blocks of 32 int8 and one fp16 scale (34 bytes)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Format:
    name: str
    bits: float                      # bits per quantised weight, scales included
    quantises: frozenset             # roles this format quantises; other tensors keep `keep_bits`
    keep_bits: int = 16
    row_scale_bits: int = 0          # extra bits per output row (int8 absmax)
    tensor_scale_bits: int = 0       # extra bits per tensor (fp8)
    compute_bytes: int = 2           # activations and KV cache
    doc: str = ""
    group: int = 0                   # weights per scale group along a row (0: none or not a build format)


_LINEAR = frozenset({"linear"})
_ALL2D = frozenset({"linear", "embedding", "head", "conv"})
_MLX = frozenset({"linear", "embedding", "head"})

FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("fp32", 32, _ALL2D, 32, compute_bytes=4, doc="32-bit floats everywhere"),
    Format("bf16", 16, _ALL2D, 16, doc="bfloat16 weights"),
    Format("fp16", 16, _ALL2D, 16, doc="float16 weights"),
    Format("fp8", 8, _LINEAR, 16, tensor_scale_bits=32, doc="fp8 Linear weights + one fp32 scale per tensor"),
    Format("int8", 8, _LINEAR, 16, row_scale_bits=32, doc="int8 Linear weights, fp32 absmax per output row"),
    Format("nf4", 4 + 32 / 64, _LINEAR, doc="bitsandbytes NF4, block 64, fp32 absmax"),
    Format("nf4-dq", 4 + 8 / 64 + 32 / (64 * 256), _LINEAR, doc="NF4 with double quantisation"),
    Format("gptq-int4", 4 + 20 / 128, _LINEAR, doc="GPTQ int4, group 128 (fp16 scale + 4-bit zero)"),
    Format("awq-int4", 4 + 20 / 128, _LINEAR, doc="AWQ int4, group 128 (fp16 scale + 4-bit zero)"),
    Format("mlx-4bit", 4 + 32 / 64, _MLX, group=64,
           doc="MLX affine 4-bit, group 64 (16-bit scale + bias); quantises Linear and Embedding"),
    Format("mlx-8bit", 8 + 32 / 64, _MLX, group=64,
           doc="MLX affine 8-bit, group 64 (16-bit scale + bias); quantises Linear and Embedding"),
    Format("torchao-int8", 8, _LINEAR, row_scale_bits=16 + 64,
           doc="torchao int8 weight-only: int8 Linear weights, 16-bit scale + int64 zero point per output row"),
    Format("torchao-int4", 4 + 32 / 128, _LINEAR, group=128,
           doc="torchao int4 weight-only (CPU packing), group 128: 16-bit scale + zero per group"),
    Format("q4_k", 4.5, _ALL2D, 32, doc="GGUF Q4_K; norms fp32"),
    Format("q8_0", 8.5, _ALL2D, 32, doc="GGUF Q8_0; norms fp32"),
]}

ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "nf4dq": "nf4-dq", "gptq": "gptq-int4",
           "awq": "awq-int4", "mlx4": "mlx-4bit", "mlx8": "mlx-8bit", "q4k": "q4_k", "q8": "q8_0"}


#: the grouped formats whose group size may vary: `mlx-4bit-g32` is mlx-4bit with groups of 32
GROUPS = {"mlx-4bit": (32, 64, 128), "mlx-8bit": (32, 64, 128), "torchao-int4": (32, 64, 128, 256)}
_VARIANT = re.compile(r"(?P<base>[a-z0-9_-]+?)-g(?P<group>[0-9]+)")


def with_group(base: Format, group: int) -> Format:
    """`base` (a grouped format) with `group` weights per scale group: 32 bits of scale (+ bias or zero) per group."""
    if group not in GROUPS.get(base.name, ()):
        raise KeyError(f"{base.name}-g{group}")
    if group == base.group:
        return base
    return replace(base, name=f"{base.name}-g{group}", bits=base.bits - 32 / base.group + 32 / group, group=group,
                   doc=f"{base.doc.split(',')[0]}, group {group}")


def get_format(name: str) -> Format:
    """The format named `name` (case-insensitive; aliases; `<grouped format>-g<group>` variants)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in FORMATS:
        return FORMATS[key]
    m = _VARIANT.fullmatch(key)
    base = ALIASES.get(m["base"], m["base"]) if m else None
    if base not in GROUPS:
        raise KeyError(name)
    return with_group(FORMATS[base], int(m["group"]))


def tensor_bits(fmt: Format, shape: tuple[int, ...], role: str) -> float:
    """Bits to store one tensor in `fmt`."""
    n = 1
    for d in shape:
        n *= d
    if n == 0:                     # a zero-width tensor (Qwen2-MoE's shared expert of width 0) stores nothing
        return 0.0
    if role in fmt.quantises and len(shape) >= 2:
        rows = n // shape[-1] if role != "conv" else shape[0]
        return n * fmt.bits + rows * fmt.row_scale_bits + fmt.tensor_scale_bits
    return n * (fmt.keep_bits if fmt.name not in ("fp32",) else 32)


def suggest(name: str) -> str:
    """The hint for an unknown format name: formats of the bit width it names (`int4` -> the 4-bit formats), else
    the nearest name, else the list."""
    import re
    from .diagnostics import did_you_mean
    bits = re.search(r"(\d+)", name)
    same = [f.name for f in FORMATS.values() if bits and int(f.bits) == int(bits.group(1))]
    if same:
        return f"the {bits.group(1)}-bit formats are: " + ", ".join(same)
    return did_you_mean(name, FORMATS) or "formats: " + ", ".join(FORMATS)
