"""Artifacts for the serving tests, built once per session: a batch-1 .so and a batch-8 .glm of the same model."""

from __future__ import annotations

from pathlib import Path

import pytest


from serve_models import build  # noqa: E402


@pytest.fixture(scope="session")
def serve_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def rowwise_b1(serve_dir) -> Path:
    path = serve_dir / "rowwise_b1.so"
    build(path, batch=1)
    return path


@pytest.fixture(scope="session")
def rowwise_b8(serve_dir) -> Path:
    path = serve_dir / "rowwise_b8.glm"
    build(path, batch=8)
    return path


@pytest.fixture(scope="session")
def reference(rowwise_b1):
    """Session.run on the batch-1 build: what `auto-glm execute` prints for the same inputs."""
    from tvm_autoglm.runtime import load

    return load(rowwise_b1)
