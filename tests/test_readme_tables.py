"""The README's generated tables are current (regenerate: scripts/readme_tables.py): the shipped specs' figures are
what compile() computes, and every row of the family table (compiler/importers/coverage.py) names tests and counts
that exist: each referenced case is in the test module it names, each count is the one that test asserts, and every
model_type the importer reads has a row."""
import importlib
import os
import subprocess
import sys

import pytest

from compiler.importers import IMPORTERS
from compiler.importers.coverage import ROWS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_seed_table_is_current():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "readme_tables.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_importer_has_a_family_row():
    rows = {t: r for r in ROWS for t in r.model_types}
    assert set(IMPORTERS) <= set(rows), sorted(set(IMPORTERS) - set(rows))
    assert {t for t, r in rows.items() if not r.pending} <= set(IMPORTERS)


def _cases(module: str, container: str):
    obj = getattr(importlib.import_module(module), container)
    return obj() if callable(obj) else obj


@pytest.mark.parametrize("row", [r for r in ROWS if not r.pending], ids=lambda r: r.family)
def test_family_row_names_real_tests_and_their_counts(row):
    for ref in (row.torch, row.mlx):
        if ref is not None:
            assert ref[2] in _cases(ref[0], ref[1]), ref
    if row.mlx is None:
        assert row.mlx_note, f"{row.family}: say what stands in for a direct MLX comparison"
    if row.count is not None:
        module, container, name, count = row.count
        assert _cases(module, container)[name][3] == count, row.count
