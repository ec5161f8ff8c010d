"""The README's figures of the shipped specs are what compile() computes (regenerate: scripts/readme_tables.py)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_seed_table_is_current():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "readme_tables.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
