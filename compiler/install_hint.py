"""The command that installs an optional part of omnic (`torch`, `mlx`, `onnx`, `graph`, `test`).

`omnic` on PyPI is an unrelated project, so `pip install omnic[torch]` would install someone else's package. omnic is
installed from its checkout: the hint names that checkout's folder when this code runs from one (an editable or
source install), else tells the user to run the command in their checkout.
"""
from __future__ import annotations

import os
import shlex

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkout() -> str | None:
    """The omnic checkout this code runs from (the folder with pyproject.toml naming omnic), if any."""
    try:
        with open(os.path.join(_ROOT, "pyproject.toml"), encoding="utf-8") as f:
            return _ROOT if 'name = "omnic"' in f.read() else None
    except OSError:
        return None


def pip_command(extra: str) -> str:
    """`pip install -e '/path/to/omnic[torch]'` (from the checkout), or the in-checkout form when there is none."""
    root = checkout()
    if root is None:
        return f"pip install -e '.[{extra}]' (in your omnic checkout; `omnic` on PyPI is another project)"
    where = "." if os.path.abspath(os.getcwd()) == root else root
    return "pip install -e " + shlex.quote(f"{where}[{extra}]")
