"""Compiling TVM's generated CUDA source to a fatbin with nvcc, at build time.

Without a CUDA driver on the build machine TVM 0.27 keeps only the CUDA
*source* in the library and compiles it when the library is loaded, so the
deployment machine would need nvcc/NVRTC. We compile here instead, for the
target's own architecture (not the build machine's GPU, which may be absent or
different): SASS for ``sm_XX`` plus PTX for ``compute_XX`` so a newer GPU can
still JIT it (arch-specific targets such as ``sm_90a`` get SASS only: their
PTX cannot run anywhere else).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from ..errors import CompileError

NVCC_TIMEOUT_S = 900

# Same macro set TVM passes: its generated code uses half/bfloat16 operators.
_FLAGS = [
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
]


@lru_cache(maxsize=1)
def find_nvcc() -> str | None:
    """$AUTOGLM_NVCC, nvcc on PATH, $CUDA_HOME/bin, then the newest /usr/local/cuda*/bin."""
    candidates = [os.environ.get("AUTOGLM_NVCC"), shutil.which("nvcc")]
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            candidates.append(os.path.join(os.environ[env], "bin", "nvcc"))
    candidates += sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def require_nvcc() -> str:
    path = find_nvcc()
    if path is None:
        raise CompileError(
            "CUDA targets need nvcc at build time to embed GPU binaries, and none was found",
            hint="install the CUDA toolkit, put nvcc on PATH or set AUTOGLM_NVCC=/path/to/nvcc",
        )
    return path


@lru_cache(maxsize=1)
def nvcc_version() -> str:
    out = subprocess.run([require_nvcc(), "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else "unknown"


def normalize_arch(arch: str) -> str:
    """``sm_80`` / ``80`` / ``8.0`` -> ``sm_80``; ``sm_90a`` stays."""
    arch = str(arch).strip()
    if re.fullmatch(r"\d\.\d[a-z]?", arch):
        arch = arch.replace(".", "")
    if re.fullmatch(r"\d+[a-z]?", arch):
        arch = f"sm_{arch}"
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise CompileError(f"CUDA arch '{arch}' is not of the form sm_80 / sm_90a")
    return arch


def gencode_flags(arch: str) -> list[str]:
    arch = normalize_arch(arch)
    number = arch[3:]
    flags = ["-gencode", f"arch=compute_{number},code=sm_{number}"]
    if number[-1].isdigit():
        flags += ["-gencode", f"arch=compute_{number},code=compute_{number}"]
    return flags


def compile_fatbin(source: str, arch: str) -> bytes:
    """CUDA source -> fatbin bytes for ``arch`` (raises CompileError with nvcc's first error)."""
    nvcc = require_nvcc()
    with tempfile.TemporaryDirectory(prefix="autoglm-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(source)
        cmd = [nvcc, "--fatbin", *gencode_flags(arch), *_FLAGS, "-o", str(out), str(src)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=NVCC_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise CompileError(f"nvcc did not finish compiling the kernels for {arch} within {NVCC_TIMEOUT_S} s") from None
        if proc.returncode != 0 or not out.is_file():
            errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]
            first = (errors or (proc.stdout + proc.stderr).strip().splitlines() or ["no output"])[0]
            raise CompileError(f"nvcc failed compiling the kernels for {arch}: {first.strip()[:300]}")
        return out.read_bytes()


def _current_arch() -> str | None:
    import tvm

    target = tvm.target.Target.current(allow_none=True)
    if target is not None and target.kind.name == "cuda" and target.attrs.get("arch"):
        return str(target.attrs["arch"])
    device = tvm.cuda(0)
    if device.exist:
        major, minor = str(device.compute_version).split(".")[:2]
        return f"sm_{major}{minor}" + ("a" if int(major) == 9 else "")
    return None


_INSTALLED = False


def install_compile_callback() -> None:
    """On a build machine *with* a CUDA driver, TVM compiles kernels during ``tvm.compile``
    through ``tvm_callback_cuda_compile`` (NVRTC by default, which needs the cuda-bindings
    package and targets the local GPU). Route it to nvcc for the target's arch instead, so
    a machine with a driver builds the same binary as one without. TVM's own callback
    stays the fallback when nvcc is missing."""
    global _INSTALLED
    if _INSTALLED:
        return
    import tvm_ffi

    original = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

    def callback(code, *rest):
        arch = _current_arch()
        if find_nvcc() is None or arch is None:
            if original is None:
                raise RuntimeError("no CUDA compiler: install nvcc")
            return original(code, *rest)
        return bytearray(compile_fatbin(str(code), arch))

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", callback, override=True)
    _INSTALLED = True
