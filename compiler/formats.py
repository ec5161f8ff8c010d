"""Storage formats: bits per weight (scales included) and which tensors quantisers leave in 16-bit.

Source: shared accounting reference. bitsandbytes (int8, NF4) and GPTQ/AWQ replace Linear layers only: embeddings,
the LM head, convolutions, norms and biases stay 16-bit. MLX `nn.quantize` also quantises embeddings and the head
(Linear and Embedding layers). GGUF quantises every 2-D weight; norms stay 32-bit.
"""
from __future__ import annotations

from dataclasses import dataclass


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


_LINEAR = frozenset({"linear"})
_ALL2D = frozenset({"linear", "embedding", "head", "conv"})

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
    Format("mlx-4bit", 4 + 32 / 64, frozenset({"linear", "embedding", "head"}),
           doc="MLX affine 4-bit, group 64 (fp16 scale + bias); quantises Linear and Embedding"),
    Format("q4_k", 4.5, _ALL2D, 32, doc="GGUF Q4_K; norms fp32"),
    Format("q8_0", 8.5, _ALL2D, 32, doc="GGUF Q8_0; norms fp32"),
]}

ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "nf4dq": "nf4-dq", "gptq": "gptq-int4",
           "awq": "awq-int4", "mlx4": "mlx-4bit", "q4k": "q4_k", "q8": "q8_0"}


def get_format(name: str) -> Format:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        raise KeyError(name)
    return FORMATS[key]


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
