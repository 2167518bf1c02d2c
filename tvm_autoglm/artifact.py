"""Writing artifacts: ``OUT.so`` + ``OUT.json``, or one ``OUT.glm``.

The library is exported to a temporary name and renamed, and the manifest is
written last (also atomically), so a crash never leaves a manifest that points
at a half-written library.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from . import __version__
from .errors import AutoGLMError
from .ir_utils import kernel_names
from .native_log import quiet_native_stderr
from .runtime import package
from .runtime.manifest import FORMAT, manifest_path_for, sha256_file, weight_file_for, write_json_atomic


def make_manifest(build, scheduled) -> dict:
    """Everything about a build except the library's sha256 (known only after export)."""
    import onnx
    import tvm

    ranges, unchecked = _index_checks(build)
    return {
        "format": FORMAT,
        "inputs": build.inputs,
        "outputs": build.outputs,
        "target": {**build.target.to_json(), "tvm": _plain(build.target.tvm_target().export())},
        "opt_level": build.opt_level,
        "passes": build.passes,
        "kernels": kernel_names(scheduled.mod),
        "kernel_flops": _kernel_flops(build.mod),
        "tuning": scheduled.tuning,
        "versions": {"tvm": tvm.__version__, "onnx": onnx.__version__, "tvm_autoglm": __version__},
        "sha256": {"library": None, "model": build.source_sha256},
        "source": build.source_path,
        "index_ranges": ranges,
        "frozen_inputs": list(getattr(build, "frozen_inputs", None) or []),
        **_symbolic_dims(build),
        "notes": list(build.notes) + unchecked,
        **({"quantization": build.quantization} if getattr(build, "quantization", None) else {}),
        **({"weights": scheduled.weights.manifest_entry()} if getattr(scheduled, "weights", None) is not None else {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _symbolic_dims(build) -> dict:
    """Dynamic builds: ``{"symbolic_dims": {"seq": {"min": 1, "max": 512}}}``; static builds add nothing."""
    ranges = getattr(build, "symbolic_dims", None)
    if not ranges:
        return {}
    from .shape_ranges import manifest_dims
    from .specialize import manifest_entries

    out = {"symbolic_dims": manifest_dims(ranges)}
    if getattr(build, "specializations", None):
        out["specializations"] = manifest_entries(build.specializations)
    return out


def _index_checks(build) -> tuple[dict, list[str]]:
    """Ranges the runtime checks before each call (token ids vs. vocabulary), and a note for gathers it cannot cover."""
    proto = getattr(build, "onnx_model", None)
    if proto is None:
        return {}, []
    from .index_ranges import index_ranges, unchecked_gathers

    unchecked = unchecked_gathers(proto)
    note = [f"index check: {', '.join(unchecked[:5])} take indices computed from inputs; those are not range-checked"] if unchecked else []
    return index_ranges(proto), note


def _kernel_flops(mod) -> dict:
    """FLOPs per kernel for ``auto-glm profile`` (the .so has no TIR to count them from later)."""
    try:
        from .measure.flops import kernel_flops

        return kernel_flops(mod)
    except Exception:  # an estimate must never fail a build
        return {}


def _plain(value):
    """TVM containers (Map, Array, String, IntImm) -> JSON-ready Python values."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, bytes)):
        return str(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Array", "List"):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if hasattr(value, "value"):
        return value.value
    return str(value)


def check_external_output(output) -> None:
    """``--weights external`` writes a file beside a ``.so``; a ``.glm`` is one file: refuse the pair up front."""
    if Path(output).suffix == ".glm":
        raise AutoGLMError(f"--output {output}: --weights external writes the weights to a file beside a .so; "
                           "a .glm packs one file (use --output NAME.so, or --weights embedded)")


def export(executable, manifest: dict, output: str | os.PathLike, export_options: dict | None = None, weights=None) -> Path:
    """Export to ``.so`` (+ ``.json`` beside it) or ``.glm``; returns the written path.

    ``weights`` (an ``external_weights.WeightTable``, for a ``--weights external`` build) is
    written to ``OUT.weights`` beside the library, before the manifest that names it.
    """
    output = Path(output)
    if output.suffix not in (".so", ".glm"):
        raise AutoGLMError(f"--output {output}: must end in .so (library + manifest beside it) or .glm (one packed file)")
    if bool(manifest.get("weights")) != (weights is not None):
        raise ValueError("a --weights external manifest needs its WeightTable to export, and only such a manifest takes one")
    if weights is not None:
        check_external_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if export_options is None:
        from .backends import for_manifest  # e.g. nvcc-built GPU binaries, the NPU simulator object

        export_options = for_manifest(manifest).export_options(manifest)
    with tempfile.TemporaryDirectory(prefix=".autoglm-export-", dir=output.parent) as tmp:
        library = Path(tmp) / "model.so"
        with quiet_native_stderr():  # one 'Scope Saving' line per VM function otherwise
            executable.export_library(str(library), **(export_options or {}))
        manifest = dict(manifest, sha256={**manifest["sha256"], "library": sha256_file(library)})
        if weights is not None:
            weight_file = Path(tmp) / "model.weights"
            manifest["weights"] = {**manifest["weights"], "file": weight_file_for(output).name, **weights.write(weight_file)}
            os.replace(weight_file, weight_file_for(output))
        if output.suffix == ".glm":
            manifest["library"] = package.LIBRARY_NAME
            manifest_file = Path(tmp) / "model.json"
            write_json_atomic(manifest_file, manifest)
            package.pack(library, manifest_file, output)
        else:
            manifest["library"] = output.name
            os.replace(library, output)
            write_json_atomic(manifest_path_for(output), manifest)
    return output
