"""Export hook: put nvcc-compiled fatbins, not CUDA source, into the deployed ``.so``.

``export_library`` serialises the imported modules into one byte blob that the
library exposes as ``__tvm_ffi__library_bin``. We take that blob from TVM as
raw bytes (``ModulePackImportsToTensor``), swap each CUDA module's source for a
fatbin built for the target arch, check the result holds SASS for that arch,
and link the blob in with ``.incbin`` (a C array of a multi-MB blob takes gcc
far longer to compile than nvcc takes for the kernels).

The blob also holds every weight (the VM executable's constants). Going
through TVM's C-array text (``ModulePackImportsToC``, about six characters per
byte, then parsed back) made bert-large's fp32 export need over 22 GiB of
memory; as bytes and memoryviews it costs about two copies of the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CompileError
from . import nvcc
from .binary import LIBRARY_BIN_SYMBOL, BinaryFormatError, CudaPayload, LibraryBlob, binary_images

# What TVM's ModulePackImportsToC wraps around the blob, with the C array replaced by an .incbin.
_BLOB_SOURCE = """#ifdef __cplusplus
extern "C" {{
#endif
extern const unsigned char {symbol}[];
{asm}
#ifdef __cplusplus
}}
#endif
"""


def require_sass(code: bytes, arch: str, what: str = "CUDA module") -> list:
    try:
        images = binary_images(code)
    except BinaryFormatError as err:
        raise CompileError(f"{what}: the compiled CUDA code is unreadable ({err})") from None
    if not any(image.kind == "sass" and image.arch == arch for image in images):
        found = ", ".join(f"{i.kind}:{i.arch}" for i in images) or "nothing"
        raise CompileError(f"{what}: no SASS for {arch} in the compiled CUDA code (found {found})")
    return images


def compile_tree(tree: LibraryBlob, arch: str) -> int:
    """Compile every CUDA module of a parsed library blob for ``arch``, in place; returns how many."""
    arch = nvcc.normalize_arch(arch)
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
    return compiled


def compile_blob(blob: bytes, arch: str) -> tuple[bytes, int]:
    """Library blob with every CUDA module compiled for ``arch``; returns (blob, modules compiled)."""
    tree = LibraryBlob.parse(blob)
    compiled = compile_tree(tree, arch)
    return tree.serialize(), compiled


def pack_imports_with_fatbins(arch: str):
    """An ``fpack_imports`` hook for ``export_library`` (see module docstring)."""

    def fpack_imports(module, is_system_lib: bool, symbol_prefix: str, workspace_dir: str) -> str:
        from tvm.runtime import _ffi_api

        if is_system_lib:  # TVM prefixes the symbol only for system libs; we never build one for CUDA
            raise CompileError("CUDA builds are exported as a shared library, not a system library")
        blob = _ffi_api.ModulePackImportsToTensor(module).numpy()
        tree = LibraryBlob.parse(memoryview(blob))
        compile_tree(tree, arch)
        blob_path = Path(workspace_dir) / "devc.bin"
        with blob_path.open("wb") as handle:
            size = tree.write(handle)
        del tree, blob
        symbol = LIBRARY_BIN_SYMBOL
        asm = (
            f'__asm__(".section .rodata\\n.globl {symbol}\\n.type {symbol}, @object\\n.balign 16\\n'
            f'{symbol}:\\n.incbin \\"{_asm_path(blob_path)}\\"\\n.size {symbol}, {size}\\n.previous\\n");'
        )
        path_c = os.path.join(workspace_dir, "devc.c")
        Path(path_c).write_text(_BLOB_SOURCE.format(symbol=symbol, asm=asm))
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
