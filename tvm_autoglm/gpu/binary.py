"""Reading CUDA binaries: fatbin/cubin architectures and the blob TVM embeds in a ``.so``.

Tests and ``auto-glm inspect`` need to know, without a GPU or CUDA's
``cuobjdump`` (not shipped on build machines), which SASS architectures a
deployed library carries. Formats:

* fatbin: ``0xBA55ED50`` header, then entries (kind 1 = PTX, 2 = ELF/SASS) whose
  header holds the SM number at byte 28 and flags at byte 40 (``0x100000`` marks
  the arch-specific ``a`` variant, e.g. sm_90a).
* cubin: an ELF with ``e_machine`` 190 (EM_CUDA); the SM number is in
  ``e_flags`` and ptxas records ``-arch sm_XX[a]`` in a note.
* ``__tvm_ffi__library_bin``: ``<u64 nbytes> <vec<u64> indptr> <vec<u64> children>``
  then per module ``<str kind> [<bytes payload>]`` (``_lib`` has no payload);
  a ``cuda`` payload is ``<str fmt> <fmap> <bytes code>``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
EM_CUDA = 190
LIBRARY_BIN_SYMBOL = "__tvm_ffi__library_bin"
_ARCH_SPECIFIC = 0x100000


class BinaryFormatError(ValueError):
    """Bytes that are not the CUDA binary / TVM blob they claim to be."""


@dataclass(frozen=True)
class Image:
    """One image in a CUDA binary: ``kind`` is ``sass`` or ``ptx``; ``arch`` like ``sm_80`` / ``sm_90a``."""

    kind: str
    arch: str


def is_fatbin(data: bytes) -> bool:
    return len(data) >= 16 and struct.unpack_from("<I", data, 0)[0] == FATBIN_MAGIC


def is_cubin(data: bytes) -> bool:
    return len(data) >= 64 and data[:4] == b"\x7fELF" and struct.unpack_from("<H", data, 18)[0] == EM_CUDA


def fatbin_images(data: bytes) -> list[Image]:
    images = []
    offset = 0
    while offset + 16 <= len(data):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, offset)
        if magic != FATBIN_MAGIC:
            if images and not any(data[offset:]):  # zero padding after the last container
                break
            raise BinaryFormatError(f"bad fatbin magic 0x{magic:08x} at offset {offset}")
        pos, end = offset + header_size, offset + header_size + fat_size
        while pos + 48 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, pos)
            sm = struct.unpack_from("<I", data, pos + 28)[0]
            flags = struct.unpack_from("<Q", data, pos + 40)[0]
            arch = f"sm_{sm}" + ("a" if flags & _ARCH_SPECIFIC else "")
            if kind == 2:
                images.append(Image("sass", arch))
            elif kind == 1:
                images.append(Image("ptx", arch.replace("sm_", "compute_")))
            pos += entry_header + payload
        offset = end
    if not images:
        raise BinaryFormatError("fatbin holds no images")
    return images


def cubin_arch(data: bytes) -> str:
    if not is_cubin(data):
        raise BinaryFormatError("not a CUDA ELF (cubin)")
    flags = struct.unpack_from("<I", data, 48)[0]
    abi_version = data[8]
    sm = (flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF
    if re.search(rb"-arch sm_%da\b" % sm, data):
        return f"sm_{sm}a"
    return f"sm_{sm}"


def binary_images(data: bytes) -> list[Image]:
    """Images in a compiled CUDA module's code (fatbin, cubin or PTX text)."""
    if is_fatbin(data):
        return fatbin_images(data)
    if is_cubin(data):
        return [Image("sass", cubin_arch(data))]
    match = re.search(rb"^\.target\s+(sm_\w+)", data[:4096], re.M)
    if match:
        return [Image("ptx", match.group(1).decode().replace("sm_", "compute_"))]
    raise BinaryFormatError("neither a fatbin, a cubin nor PTX")


# ---------------------------------------------------------------- TVM library blob


def _read_u64(data: bytes, pos: int) -> tuple[int, int]:
    if pos + 8 > len(data):
        raise BinaryFormatError("truncated library blob")
    return struct.unpack_from("<Q", data, pos)[0], pos + 8


def _read_bytes(data, pos: int):
    """The length-prefixed field at ``pos``: a view when ``data`` is a memoryview (no copy of the weights)."""
    size, pos = _read_u64(data, pos)
    if pos + size > len(data):
        raise BinaryFormatError("truncated library blob")
    return data[pos : pos + size], pos + size


def _read_vec(data: bytes, pos: int) -> tuple[list[int], int]:
    count, pos = _read_u64(data, pos)
    if pos + 8 * count > len(data):
        raise BinaryFormatError("truncated library blob")
    return list(struct.unpack_from(f"<{count}Q", data, pos)), pos + 8 * count


def _bytes_field(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


def _field_parts(value) -> tuple:
    return struct.pack("<Q", len(value)), value


@dataclass
class LibraryBlob:
    """The module tree TVM serialises into a library: CSR import tree + (kind, payload) per module."""

    indptr: list[int]
    children: list[int]
    modules: list[tuple[str, bytes | None]]

    @classmethod
    def parse(cls, blob) -> "LibraryBlob":
        """Parse ``blob`` (bytes or memoryview). Pass a memoryview for a large model: the VM
        module's payload carries every weight, and slicing bytes would copy them."""
        nbytes, pos = _read_u64(blob, 0)
        body = blob[8 : 8 + nbytes]
        if len(body) != nbytes:
            raise BinaryFormatError(f"library blob says {nbytes} bytes but holds {len(body)}")
        indptr, pos = _read_vec(body, 0)
        children, pos = _read_vec(body, pos)
        modules = []
        for _ in range(len(indptr) - 1):
            kind, pos = _read_bytes(body, pos)
            kind = bytes(kind).decode()
            payload = None
            if kind != "_lib":
                payload, pos = _read_bytes(body, pos)
            modules.append((kind, payload))
        if pos != len(body):
            raise BinaryFormatError(f"{len(body) - pos} trailing bytes after the last module in the library blob")
        return cls(indptr, children, modules)

    def parts(self) -> list:
        """The serialised blob as a list of byte chunks (payloads are not copied)."""
        body = [struct.pack(f"<Q{len(self.indptr)}Q", len(self.indptr), *self.indptr)]
        body.append(struct.pack(f"<Q{len(self.children)}Q", len(self.children), *self.children))
        for kind, payload in self.modules:
            body.extend(_field_parts(kind.encode()))
            if kind != "_lib":
                body.extend(_field_parts(payload))
        return [struct.pack("<Q", sum(len(part) for part in body)), *body]

    def serialize(self) -> bytes:
        return b"".join(self.parts())

    def write(self, handle) -> int:
        """Stream the serialised blob to a binary file; returns the bytes written."""
        return sum(handle.write(part) for part in self.parts())


_CODE_LOOKS_RIGHT = {
    "cuda": lambda code: b"__global__" in code,
    "fatbin": is_fatbin,
    "cubin": lambda code: is_cubin(code) or is_fatbin(code),
    "ptx": lambda code: b".target" in code[:4096],
}


@dataclass
class CudaPayload:
    """A serialised CUDA module: ``fmt`` (cuda = source, ptx, cubin, fatbin), its function table, its code."""

    fmt: str
    fmap: bytes  # opaque: copied through unchanged
    code: bytes

    @classmethod
    def parse(cls, payload) -> "CudaPayload":
        payload = bytes(payload)  # kernels only: small next to the weights
        fmt, pos = _read_bytes(payload, 0)
        fmt = fmt.decode()
        check = _CODE_LOOKS_RIGHT.get(fmt)
        if check is None:
            raise BinaryFormatError(f"unknown CUDA module format '{fmt}'")
        # The code is the last field; the function table before it is left opaque, so find
        # the length prefix that spans exactly to the end and whose bytes are code of this fmt.
        for start in range(pos, len(payload) - 7):
            if struct.unpack_from("<Q", payload, start)[0] == len(payload) - start - 8:
                code = payload[start + 8 :]
                if check(code):
                    return cls(fmt, payload[pos:start], code)
        raise BinaryFormatError(f"cannot find the {fmt} code in a CUDA module payload")

    def serialize(self) -> bytes:
        return _bytes_field(self.fmt.encode()) + self.fmap + _bytes_field(self.code)


# ---------------------------------------------------------------- ELF symbol lookup


def read_library_blob(library: str | Path) -> memoryview:
    """The ``__tvm_ffi__library_bin`` bytes of an exported ``.so``, read from the file (no dlopen).

    A view into the file's bytes: for a model with 1 GB of weights, a slice would copy them again."""
    data = Path(library).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BinaryFormatError(f"{library}: not a 64-bit little-endian ELF shared library")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, stype, _flags, addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize
        )
        sections.append((stype, addr, offset, size, link, entsize))
    for stype, _addr, offset, size, link, entsize in sections:
        if stype not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        strtab = sections[link]
        for pos in range(offset, offset + size, entsize or 24):
            st_name, _st_info, _st_other, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", data, pos)
            start = strtab[2] + st_name
            if data[start : data.index(b"\0", start)] != LIBRARY_BIN_SYMBOL.encode():
                continue
            if st_shndx == 0 or st_shndx >= len(sections):
                continue
            _, sec_addr, sec_offset, sec_size, _, _ = sections[st_shndx]
            file_pos = sec_offset + (st_value - sec_addr)
            nbytes = struct.unpack_from("<Q", data, file_pos)[0]
            if st_value - sec_addr + 8 + nbytes > sec_size:
                raise BinaryFormatError(f"{library}: {LIBRARY_BIN_SYMBOL} runs past its section")
            return memoryview(data)[file_pos : file_pos + 8 + nbytes]
    raise BinaryFormatError(f"{library}: no {LIBRARY_BIN_SYMBOL} symbol (not a TVM library with imported modules)")


def embedded_cuda_modules(library: str | Path) -> list[dict]:
    """For each CUDA module in an exported ``.so``: its format, code size and images (kind, arch)."""
    blob = LibraryBlob.parse(read_library_blob(library))
    found = []
    for kind, payload in blob.modules:
        if kind != "cuda":
            continue
        module = CudaPayload.parse(payload)
        images = [] if module.fmt == "cuda" else binary_images(module.code)
        found.append({"format": module.fmt, "bytes": len(module.code), "images": images})
    return found
