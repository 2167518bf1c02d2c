"""The ``.glm`` package: a ``.so`` and its manifest in one tar file.

Extraction refuses any member that is not one of the two expected plain files,
so a crafted package cannot write outside its folder (path traversal) or drop
links.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from ..errors import ArtifactError
from .manifest import write_bytes_atomic

LIBRARY_NAME = "model.so"
MANIFEST_NAME = "model.json"


def pack(library: Path, manifest: Path, output: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(library), arcname=LIBRARY_NAME, recursive=False)
        tar.add(str(manifest), arcname=MANIFEST_NAME, recursive=False)
    write_bytes_atomic(output, buffer.getvalue())


def unpack(package: Path, into: Path | None = None) -> tuple[Path, Path]:
    """Extract to ``into`` (default: a fresh temp dir); returns (library, manifest)."""
    into = Path(into or tempfile.mkdtemp(prefix="autoglm-glm-"))
    into.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(package, mode="r:*")
    except (tarfile.TarError, OSError) as err:
        raise ArtifactError(f"{package} is not a valid .glm package: {err}") from None
    with tar:
        members = tar.getmembers()
        names = sorted(m.name for m in members)
        for member in members:
            if member.name not in (LIBRARY_NAME, MANIFEST_NAME) or not member.isfile():
                raise ArtifactError(
                    f"{package}: refusing member '{member.name}' (a .glm holds only {LIBRARY_NAME} and {MANIFEST_NAME} as plain files)"
                )
        if names != sorted([LIBRARY_NAME, MANIFEST_NAME]):
            raise ArtifactError(f"{package}: expected {LIBRARY_NAME} and {MANIFEST_NAME}, found {names}")
        for member in members:
            data = tar.extractfile(member).read()
            target = into / member.name
            write_bytes_atomic(target, data)
            os.chmod(target, 0o644)
    return into / LIBRARY_NAME, into / MANIFEST_NAME
