"""Shared test set-up. A test that takes `op_case` runs once per op example ((op, index, spec) from
tests/op_examples.py, named `Op-i`): the registry-wide parametrisation, in one place. What several test modules
share lives in helper modules (tests/op_examples.py, tests/shrink.py, tests/hf_models.py, tests/strategies.py),
never in a test module that others import."""
from __future__ import annotations

from tests.op_examples import CASE_IDS, CASES


def pytest_generate_tests(metafunc):
    if "op_case" in metafunc.fixturenames:
        metafunc.parametrize("op_case", CASES, ids=CASE_IDS)
