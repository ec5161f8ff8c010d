"""docs/seed-audit.md is generated: regenerating it from the shipped specs gives the committed file byte for byte."""
from __future__ import annotations

import importlib.util
import os
import sys

from tests.shrink import ROOT


def test_seed_audit_is_current():
    spec = importlib.util.spec_from_file_location("seed_audit", os.path.join(ROOT, "scripts", "seed_audit.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["seed_audit"] = mod               # dataclasses look their module up
    spec.loader.exec_module(mod)
    with open(os.path.join(ROOT, "docs", "seed-audit.md"), encoding="utf-8") as f:
        committed = f.read()
    assert mod.render() == committed, "docs/seed-audit.md is stale: run python scripts/seed_audit.py"
