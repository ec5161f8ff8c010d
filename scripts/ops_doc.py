"""Write docs/ops.md, the layer-type reference, from the op registry and the tiny per-op specs of
tests/op_examples.py (`python scripts/ops_doc.py`; `--check` exits 1 when the file is stale)."""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.op_docs import markdown  # noqa: E402
from tests.op_examples import OP_EXAMPLES  # noqa: E402

OUT = ROOT / "docs" / "ops.md"


def main() -> int:
    text = markdown(OP_EXAMPLES)
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python scripts/ops_doc.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
