"""Fixtures for the schedule-rule tests (helpers live in sched_helpers.py)."""

import pytest


@pytest.fixture(scope="session")
def target():
    from tvm_autoglm.targets import load_target

    return load_target("cpu").tvm_target()
