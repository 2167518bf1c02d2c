"""Export hook: put nvcc-compiled fatbins, not CUDA source, into the deployed ``.so``.

``export_library`` serialises the imported modules into one byte blob that the
library exposes as ``__tvm_ffi__library_bin``. We let TVM produce that blob
(``ModulePackImportsToC``), swap each CUDA module's source for a fatbin built
for the target arch, check the result holds SASS for that arch, and link the
blob in with ``.incbin`` (a C array of a multi-MB blob takes gcc far longer to
compile than nvcc takes for the kernels).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CompileError
from . import nvcc
from .binary import BinaryFormatError, CudaPayload, LibraryBlob, binary_images

_ARRAY = re.compile(r"const unsigned char (\w+)\[(\d+)\] = \{(.*?)\};", re.S)


def require_sass(code: bytes, arch: str, what: str = "CUDA module") -> list:
    try:
        images = binary_images(code)
    except BinaryFormatError as err:
        raise CompileError(f"{what}: the compiled CUDA code is unreadable ({err})") from None
    if not any(image.kind == "sass" and image.arch == arch for image in images):
        found = ", ".join(f"{i.kind}:{i.arch}" for i in images) or "nothing"
        raise CompileError(f"{what}: no SASS for {arch} in the compiled CUDA code (found {found})")
    return images


def compile_blob(blob: bytes, arch: str) -> tuple[bytes, int]:
    """Library blob with every CUDA module compiled for ``arch``; returns (blob, modules compiled)."""
    arch = nvcc.normalize_arch(arch)
    tree = LibraryBlob.parse(blob)
    compiled = 0
    for index, (kind, payload) in enumerate(tree.modules):
        if kind != "cuda":
            continue
        module = CudaPayload.parse(payload)
        if module.fmt == "cuda":
            module.code = nvcc.compile_fatbin(module.code.decode(), arch)
            module.fmt = "fatbin"
            compiled += 1
        require_sass(module.code, arch, f"CUDA module {index}")
        tree.modules[index] = (kind, module.serialize())
    if not compiled and not any(kind == "cuda" for kind, _ in tree.modules):
        raise CompileError("the CUDA build has no CUDA kernels to embed; every kernel ran on the host")
    return tree.serialize(), compiled


def pack_imports_with_fatbins(arch: str):
    """An ``fpack_imports`` hook for ``export_library`` (see module docstring)."""

    def fpack_imports(module, is_system_lib: bool, symbol_prefix: str, workspace_dir: str) -> str:
        from tvm.runtime import _ffi_api

        text = _ffi_api.ModulePackImportsToC(module, is_system_lib, symbol_prefix)
        match = _ARRAY.search(text)
        if match is None:
            raise CompileError("unexpected layout of TVM's packed-imports source; cannot embed GPU binaries")
        symbol, size = match.group(1), int(match.group(2))
        blob = bytes.fromhex(re.sub(r"0x|[,\s]", "", match.group(3)))
        if len(blob) != size:
            raise CompileError(f"packed-imports blob holds {len(blob)} bytes, declared {size}")
        new_blob, _ = compile_blob(blob, arch)
        blob_path = Path(workspace_dir) / f"{symbol_prefix}devc.bin"
        blob_path.write_bytes(new_blob)
        asm = (
            f'__asm__(".section .rodata\\n.globl {symbol}\\n.type {symbol}, @object\\n.balign 16\\n'
            f'{symbol}:\\n.incbin \\"{_asm_path(blob_path)}\\"\\n.size {symbol}, {len(new_blob)}\\n.previous\\n");'
        )
        path_c = os.path.join(workspace_dir, f"{symbol_prefix}devc.c")
        Path(path_c).write_text(text[: match.start()] + asm + text[match.end() :])
        return path_c

    return fpack_imports


def _asm_path(path: Path) -> str:
    text = str(path.resolve())
    if any(c in text for c in '"\\\n'):
        raise CompileError(f"workspace path {text!r} cannot be embedded in an .incbin directive")
    return text


def cuda_export_options(manifest: dict) -> dict:
    """``export_library`` keyword arguments for a CUDA build; adds a note to the manifest."""
    target = manifest.get("target", {})
    arch = (target.get("tvm") or {}).get("arch")
    if not arch:
        raise CompileError(f"target {target.get('name')} has no 'arch' in its tvm config; cannot choose a GPU binary")
    arch = nvcc.normalize_arch(arch)
    nvcc.require_nvcc()
    note = f"GPU kernels embedded as fatbin for {arch} (SASS{'' if arch[-1].isalpha() else ' + PTX'}), nvcc {nvcc.nvcc_version()}"
    notes = manifest.setdefault("notes", [])
    if note not in notes:
        notes.append(note)
    return {"fpack_imports": pack_imports_with_fatbins(arch)}
