"""The manifest: the JSON file beside every exported ``.so``.

It is the contract between the compiler and any runtime: input/output names,
shapes and dtypes in call order, the target, and sha256 digests so that a
runtime can refuse a library that is not the one the manifest describes
(loading a ``.so`` runs native code). Only stdlib here: deployment images
import this without the compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import ArtifactError

FORMAT = "tvm_autoglm.manifest/1"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def manifest_path_for(library: str | os.PathLike) -> Path:
    """``model.so`` -> ``model.json``."""
    return Path(library).with_suffix(".json")


def weight_file_for(library: str | os.PathLike) -> Path:
    """``model.so`` -> ``model.weights`` (``--weights external``)."""
    return Path(library).with_suffix(".weights")


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"manifest {path} not found (every exported .so needs its .json beside it)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"manifest {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"manifest {path} is not a tvm_autoglm manifest (format {data.get('format') if isinstance(data, dict) else None!r}, expected {FORMAT!r})")
    for key in ("inputs", "outputs", "target", "sha256"):
        if key not in data:
            raise ArtifactError(f"manifest {path} lacks the field '{key}'")
    return data
