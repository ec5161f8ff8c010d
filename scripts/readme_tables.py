"""The README's tables of the shipped specs' figures, generated from compile() so they cannot go stale: the seed
table, and the weight bytes of each quantised build format with the plan's verdict (compiler/quantise.py).

    python scripts/readme_tables.py          # rewrite the block between the markers in README.md
    python scripts/readme_tables.py --check  # exit 1 if README.md differs (tests/test_readme_tables.py)
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import compiler  # noqa: E402

SPECS = ["specs/omni_lite.json", "specs/oculus.json", "specs/nanovlm/original_small.json",
         "specs/nanovlm/default.json", "specs/nanovlm/dinov3_gemma.json", "specs/fvlm_135m.json"]
BEGIN, END = "<!-- seed-table:begin (scripts/readme_tables.py) -->", "<!-- seed-table:end -->"
QBEGIN, QEND = "<!-- quant-table:begin (scripts/readme_tables.py) -->", "<!-- quant-table:end -->"
BUILDS = [("mlx", "4"), ("mlx", "8"), ("torch", "int8"), ("torch", "int4"), ("gguf", "q8_0")]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def table() -> str:
    rows = ["| spec | parameters | active / token | trainable | prefill FLOPs | FLOPs / decoded token | inference bf16 "
            "| inference nf4 | training (AdamW, all) | at |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for path in SPECS:
        c = compiler.compile(os.path.join(ROOT, path))
        r = c.report
        p, f, m, s = r["params"], r["flops"], r["memory"], r["settings"]
        at = f"batch {s['batch']}, {s['context']} tokens" + (f", {s['frames']} frames" if "fvlm" in path else "")
        rows.append(f"| `{path}` | {p['total']:,} | {p['active']:,} | {p['trainable']:,} | {f['prefill'] / 1e12:.2f} T "
                    f"| {f['decode_per_token'] / 1e9:.2f} G | {gib(m['inference']['bf16'])} | "
                    f"{gib(m['inference']['nf4'])} | {gib(m['training']['all']['total'])} | {at} |")
    return "\n".join(rows)


def why(msg: str) -> str:
    """The first cause a QuantError gives, in a few words."""
    first = (msg.splitlines()[1:] or [msg])[0]
    for words, short in (("GGUF export", "not one llama LM"), ("llama.cpp", "not one llama LM"),
                         ("stacked experts", "MoE experts"), ("linear kernel", "layer type"),
                         ("group size", "width vs group"), ("block size", "width vs group")):
        if words in first:
            return short + (", ..." if len(msg.splitlines()) > 2 else "")
    return first.strip()


def quant_table() -> str:
    from compiler.quantise import QuantError, quant_plan
    rows = ["| spec | bf16 | " + " | ".join(f"{t} `--quantize {q}`" for t, q in BUILDS) + " |",
            "|---|---|" + "---|" * len(BUILDS)]
    for path in SPECS:
        c = compiler.compile(os.path.join(ROOT, path))
        cells = []
        for t, q in BUILDS:
            try:
                p = quant_plan(c, t, q)
                cells.append(f"{p.fmt.name} {p.expected_bytes:,}")
            except QuantError as e:
                cells.append(f"refused ({why(str(e))})")
        rows.append(f"| `{path}` | {c.report['memory']['weights']['bf16']:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render(readme: str) -> str:
    a, b = readme.index(BEGIN), readme.index(END)
    readme = readme[:a] + BEGIN + "\n" + table() + "\n" + readme[b:]
    a, b = readme.index(QBEGIN), readme.index(QEND)
    return readme[:a] + QBEGIN + "\n" + quant_table() + "\n" + readme[b:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's generated tables are stale: run python scripts/readme_tables.py")
            return 1
        return 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
