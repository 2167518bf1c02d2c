"""Shared fixtures for the tuning tests: one tiny model and one small tuned database.

Tuning has a fixed start-up cost (TVM import in the builder workers, the first
LLVM builds), so one 16-trial run is shared by every test that only reads it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


from tiny import tiny_mlp  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return tiny_mlp(tmp_path_factory.mktemp("tiny") / "tiny_mlp.onnx")


@pytest.fixture(scope="session")
def tuned(tmp_path_factory, tiny_model):
    """(TuneResult, db folder) after 16 trials on the tiny model."""
    from tvm_autoglm import tune

    db = tmp_path_factory.mktemp("tuned") / "db"
    result = tune(tiny_model, trials=16, tuning_db=db, seed=0, progress=False, use_shipped_schedules=False)
    return result, db


@pytest.fixture
def db_copy(tuned, tmp_path) -> Path:
    """A private copy of the tuned database, for tests that modify it."""
    dst = tmp_path / "db"
    shutil.copytree(tuned[1], dst, ignore=shutil.ignore_patterns("logs"))
    return dst
