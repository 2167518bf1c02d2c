"""The external weight file (``compile --weights external``): format, checks, and zero-copy loading.

A build with external weights keeps its constants out of the ``.so``; they are function
parameters, written once to ``OUT.weights`` beside the library and passed to every call.
The file is memory-mapped at load and each tensor reaches TVM through DLPack without a
copy, so loading costs page-cache mappings, not a second resident copy of the weights.

Layout (little endian)::

    b"AGLMWTS1"                      8 bytes, magic
    index length L                   u64
    index                            L bytes of UTF-8 JSON: {"tensors": [{name, dtype, shape, offset, nbytes}]}
    zero padding, then each tensor at its ``offset`` (a multiple of ALIGNMENT)

The file sits beside the library under its name (``m.so`` -> ``m.weights``, as the manifest
``m.json`` does). The manifest's ``weights`` entry names it, its size and the sha256 of the header
(magic, length and index). The runtime checks those two before mapping: cheap (no pass over
the data) and enough to catch a missing, truncated, replaced or mismatched file. The
manifest's ``sha256`` of the whole file is for offline checks (``sha256sum``), not read at load.

Lean runtime module: numpy and the TVM runtime only.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from ..errors import ArtifactError

MAGIC = b"AGLMWTS1"
#: Every tensor starts at a multiple of this: TVM's FromDLPack refuses data not 64-byte aligned,
#: and our kernels assume it.
ALIGNMENT = 64
_HEADER = struct.Struct("<8sQ")


def aligned(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def header_bytes(index: dict) -> bytes:
    """Magic, index length and index: the bytes the manifest's ``index_sha256`` covers."""
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    return _HEADER.pack(MAGIC, len(body)) + body


def read_header(path: Path) -> tuple[bytes, dict]:
    """(header bytes, index) of a weight file; refuses a file that is not one."""
    with open(path, "rb") as handle:
        head = handle.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise ArtifactError(f"weight file {path} is truncated ({len(head)} bytes, not even a header)")
        magic, length = _HEADER.unpack(head)
        if magic != MAGIC:
            raise ArtifactError(f"weight file {path} is not a tvm_autoglm weight file (magic {magic!r}, expected {MAGIC!r})")
        body = handle.read(length)
    if len(body) != length:
        raise ArtifactError(f"weight file {path} is truncated inside its index ({len(body)} of {length} bytes)")
    try:
        index = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"weight file {path} has an unreadable index: {err}") from None
    return head + body, index


def verify(path: Path, entry: dict) -> dict:
    """Check ``path`` against the manifest's ``weights`` entry (exists, size, header sha256); returns the index."""
    if not path.is_file():
        raise ArtifactError(f"weight file {path} not found (a --weights external build loads NAME.weights beside NAME.so)")
    size = path.stat().st_size
    if size != int(entry["size"]):
        raise ArtifactError(f"weight file {path} has {size} bytes, the manifest expects {int(entry['size'])} (truncated or another build's)")
    header, index = read_header(path)
    got = hashlib.sha256(header).hexdigest()
    if got != entry["index_sha256"]:
        raise ArtifactError(f"weight file {path}: index sha256 {got[:16]}... does not match the manifest's "
                            f"{str(entry['index_sha256'])[:16]}... (another build's weights, or modified)")
    for record in index["tensors"]:
        end = int(record["offset"]) + int(record["nbytes"])
        if int(record["offset"]) % ALIGNMENT or end > size:
            raise ArtifactError(f"weight file {path}: tensor '{record['name']}' at offset {record['offset']} "
                                f"(+{record['nbytes']} bytes) is misaligned or past the end ({size} bytes)")
    return index


def load(path: Path, entry: dict, device) -> dict:
    """``{name: tvm Tensor}`` over a private (copy-on-write) mapping of ``path``: no copy on the CPU.

    The mapping is writable only so that numpy can export it through DLPack (read-only arrays
    cannot be); nothing writes to weights, and a write would stay private to this process.
    A dtype numpy cannot export (bfloat16), or a non-CPU device, gets a copy instead.
    """
    import tvm

    index = verify(path, entry)
    mapping = np.memmap(path, dtype=np.uint8, mode="c")
    tensors = {}
    for record in index["tensors"]:
        start, nbytes = int(record["offset"]), int(record["nbytes"])
        raw = mapping[start:start + nbytes]
        shape = tuple(int(d) for d in record["shape"])
        dtype = record["dtype"]
        try:
            view = raw.view(np.dtype(dtype)).reshape(shape)
        except TypeError:
            view = None
        if view is not None and device.dlpack_device_type() == tvm.cpu(0).dlpack_device_type():
            tensors[record["name"]] = tvm.runtime.from_dlpack(view)
        else:
            tensor = tvm.runtime.empty(shape, dtype, device)
            tensor.copyfrom(np.asarray(raw) if view is None else view)
            tensors[record["name"]] = tensor
    missing = sorted({name for names in entry["functions"].values() for name in names} - set(tensors))
    if missing:
        raise ArtifactError(f"weight file {path} lacks tensor(s) {missing[:5]} that the manifest's functions take")
    return tensors


class BoundVirtualMachine:
    """A Relax VM whose functions take the weights as trailing arguments, called like one that embeds them.

    ``vm["main"](*inputs)`` calls ``main(*inputs, *weights_of_main)``; everything else
    (``set_instrument``, ``time_evaluator``...) goes to the wrapped VM.
    """

    def __init__(self, vm, weights: dict, functions: dict):
        self._vm = vm
        self._args = {name: [weights[w] for w in names] for name, names in functions.items()}

    def __getitem__(self, name):
        fn = self._vm[name]
        extra = self._args.get(name)
        if not extra:
            return fn

        def call(*args):
            return fn(*args, *extra)

        return call

    def __getattr__(self, name):
        return getattr(self._vm, name)
