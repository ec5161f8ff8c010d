"""The README's generated tables: the shipped specs' figures (from compile()) and the families `omnic import-hf`
covers (from compiler/importers/coverage.py), so neither can go stale.

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
from compiler.importers import coverage  # noqa: E402

SPECS = ["specs/omni_lite.json", "specs/oculus.json", "specs/nanovlm/original_small.json",
         "specs/nanovlm/default.json", "specs/nanovlm/dinov3_gemma.json", "specs/fvlm_135m.json"]
BEGIN, END = "<!-- seed-table:begin (scripts/readme_tables.py) -->", "<!-- seed-table:end -->"
FAMILY_BEGIN = "<!-- family-table:begin (scripts/readme_tables.py) -->"
FAMILY_END = "<!-- family-table:end -->"


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


def _between(text: str, begin: str, end: str, body: str) -> str:
    a, b = text.index(begin), text.index(end)
    return text[:a] + begin + "\n" + body + "\n" + text[b:]


def render(readme: str) -> str:
    readme = _between(readme, BEGIN, END, table())
    return _between(readme, FAMILY_BEGIN, FAMILY_END, coverage.table())


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
