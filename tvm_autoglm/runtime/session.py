"""Load an exported artifact and run it with only the TVM runtime and numpy.

The sha256 in the manifest is checked *before* the library is loaded: loading
a ``.so`` runs its native initialisers, so a tampered file must never reach
``dlopen``.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, DeviceError, error_summary
from . import package
from .inputs import drop_frozen_inputs, validate_inputs
from .manifest import manifest_path_for, read_manifest, sha256_file


def resolve_artifact(path: str | Path) -> tuple[Path, dict]:
    """(library path, manifest) for a ``.so`` (with its ``.json``) or a ``.glm``; verifies sha256."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} not found")
    if path.suffix == ".glm":
        library, manifest_file = package.unpack(path, _glm_cache_dir(path))
    else:
        library, manifest_file = path, manifest_path_for(path)
    manifest = read_manifest(manifest_file)
    want = manifest["sha256"].get("library")
    got = sha256_file(library)
    if want != got:
        raise ArtifactError(
            f"{path}: sha256 of the library ({got[:16]}...) does not match the manifest ({str(want)[:16]}...); "
            "the file was modified or does not belong to this manifest, refusing to load it"
        )
    _check_versions(path, manifest)
    return library, manifest


def _glm_cache_dir(path: Path) -> Path:
    """One extraction folder per package content (by sha256), reused by later loads instead of a new temp dir each time."""
    import os

    root = Path(os.environ.get("AUTOGLM_CACHE") or Path.home() / ".cache" / "tvm_autoglm") / "glm"
    return root / sha256_file(path)[:32]


def _check_versions(path: Path, manifest: dict) -> None:
    """A different TVM major.minor is an error (runtime ABI); a different tvm_autoglm only warns."""
    import tvm

    built = manifest.get("versions", {})
    built_tvm = str(built.get("tvm", ""))
    if built_tvm and built_tvm.split(".")[:2] != tvm.__version__.split(".")[:2]:
        raise ArtifactError(f"{path} was built with TVM {built_tvm}; this runtime has TVM {tvm.__version__}: rebuild it")
    from .. import __version__

    if built.get("tvm_autoglm") and built["tvm_autoglm"] != __version__:
        warnings.warn(f"{path} was built by tvm_autoglm {built['tvm_autoglm']}; running with {__version__}")


def device_for(manifest: dict):
    import tvm

    device_type = manifest["target"].get("device", "cpu")
    if device_type == "cuda":
        device = tvm.cuda(0)
        if not device.exist:
            raise DeviceError(f"target {manifest['target'].get('name')} needs a CUDA device; none found")
        return device
    return tvm.cpu(0)


def default_thread_count() -> None:
    """Give TVM's thread pool every usable CPU unless the user chose (``TVM_NUM_THREADS``).

    TVM's own default is half the logical CPUs (it assumes SMT), which on a
    2-vCPU machine means one thread and half the speed. The variable is read
    when the pool first starts, so this must run before the first call.
    """
    import os

    if not os.environ.get("TVM_NUM_THREADS"):
        try:
            count = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            count = os.cpu_count() or 1
        os.environ["TVM_NUM_THREADS"] = str(max(1, count))


def external_weights(library_path: Path, manifest: dict) -> dict | None:
    """A ``--weights external`` build's tensors, mapped from ``NAME.weights`` beside ``NAME.so`` (None for embedded builds).

    Beside the library under its name, as the manifest is: a renamed m.so/m.json/m.weights still loads.
    One mapping serves every Session made with it (serve's workers share it).
    """
    if not manifest.get("weights"):
        return None
    from .manifest import weight_file_for
    from .weight_file import load

    return load(weight_file_for(library_path), manifest["weights"], device_for(manifest))


class Session:
    """A loaded artifact ready to run: ``Session("m.so").run(input_ids=...)``."""

    def __init__(self, module, manifest: dict, path: Path | None = None, weights: dict | None = None):
        """Wrap an already loaded module (or an in-memory Relax executable).

        ``weights`` (``{name: tvm Tensor}``) is what a ``--weights external`` build's functions take
        after their inputs; ``vm[name]`` then passes them, so callers call it like an embedded build.
        """
        from tvm import relax

        default_thread_count()
        self.path = path
        self.manifest = manifest
        self.device = device_for(manifest)
        self.module = module
        self.vm = relax.VirtualMachine(module, self.device)
        entry = manifest.get("weights")
        if entry:
            if weights is None:
                raise ArtifactError("this build keeps its weights outside the library (--weights external); load it from "
                                    "its exported .so (the weight file is beside it)")
            from .weight_file import BoundVirtualMachine

            self.weights = weights
            self.vm = BoundVirtualMachine(self.vm, weights, entry["functions"])

    @classmethod
    def open(cls, path: str | Path) -> "Session":
        """Verify (sha256, versions) and load a ``.so``/``.glm`` artifact."""
        import tvm

        library_path, manifest = resolve_artifact(path)
        # A CUDA artifact on a machine without a GPU: say so before loading, which would
        # otherwise fail with an obscure "no loader for {cuda}" from the missing CUDA runtime.
        weights = external_weights(library_path, manifest)  # checked and mapped before the library is loaded
        if manifest["target"].get("device") == "cuda":
            device_for(manifest)  # DeviceError "needs a CUDA device; none found" before the loader can fail obscurely
        from ..native_log import quiet_native_stderr

        try:
            with quiet_native_stderr():  # one 'Scope Loaded' line per VM function otherwise
                module = tvm.runtime.load_module(str(library_path))
        except Exception as err:
            if manifest["target"].get("device") != "cuda":
                raise
            reason = error_summary(err)
            raise DeviceError(
                f"target {manifest['target'].get('name')} needs a CUDA device and runtime; loading {path} failed: {reason[:200]}"
            ) from None
        return cls(module, manifest, Path(path), weights)

    @property
    def input_specs(self) -> list[dict]:
        return self.manifest["inputs"]

    @property
    def index_ranges(self) -> dict:
        """Inputs used as indices into constant tables and their valid values (checked before every call)."""
        return self.manifest.get("index_ranges") or {}

    @property
    def frozen_inputs(self) -> list[dict]:
        """Inputs bound to constants at compile time: accepted only with exactly their frozen value."""
        return self.manifest.get("frozen_inputs") or []

    def _checked(self, inputs: dict) -> list:
        return validate_inputs(drop_frozen_inputs(inputs, self.frozen_inputs), self.input_specs, self.index_ranges, self.manifest.get("symbolic_dims"))

    @property
    def output_specs(self) -> list[dict]:
        return self.manifest["outputs"]

    def _to_device(self, arrays):
        import tvm

        return [tvm.runtime.tensor(a, self.device) for a in arrays]

    def run(self, inputs: dict | None = None, **kwargs) -> dict[str, np.ndarray]:
        arrays = self._checked({**(inputs or {}), **kwargs})
        result = self.vm[self.function_for(arrays)](*self._to_device(arrays))
        return self._outputs(result)

    def function_for(self, arrays) -> str:
        """The VM function for these (checked, manifest-ordered) inputs: a dynamic build's static
        variant whose sizes equal the inputs' symbolic dims exactly (``--specialize``), else ``main``."""
        if not self.manifest.get("specializations"):
            return "main"
        from .shapes import pick_function

        symbols = {}
        for spec, array in zip(self.input_specs, arrays):
            for dim, size in zip(spec["shape"], array.shape):
                if isinstance(dim, str):
                    symbols[dim] = int(size)
        return pick_function(self.manifest, symbols)

    def _outputs(self, result) -> dict[str, np.ndarray]:
        flat = _flatten(result)
        names = [spec["name"] for spec in self.output_specs]
        if len(flat) != len(names):
            raise ArtifactError(f"the library returned {len(flat)} outputs but the manifest lists {len(names)}")
        return {name: value.numpy() for name, value in zip(names, flat)}

    def generate(self, input_ids, max_new_tokens: int = 64, **kwargs):
        """Token ids from a generator artifact (``compile --generate``); ``stream=True`` gives an iterator.

        Keyword arguments: do_sample, temperature, top_k, top_p, eos_token_id, seed,
        output_logits (see ``tvm_autoglm.generate.loop.generate``).
        """
        from ..generate.runner import generate

        return generate(self, input_ids, max_new_tokens, **kwargs)

    def latencies(self, inputs: dict, repeat: int = 10, warmup: int = 2) -> list[float]:
        """Wall-clock seconds of ``repeat`` runs of main (inputs already on the device)."""
        checked = self._checked(inputs)
        arrays = self._to_device(checked)
        fn = self.vm[self.function_for(checked)]
        for _ in range(warmup):
            fn(*arrays)
        self.device.sync()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn(*arrays)
            self.device.sync()
            times.append(time.perf_counter() - start)
        return times


def summarize(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    return {
        "median_ms": statistics.median(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "p90_ms": ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))],
        "runs": len(ms),
    }


def _flatten(value) -> list:
    import tvm

    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    try:
        items = list(value)
    except TypeError:
        return [value]
    flat = []
    for item in items:
        flat.extend(_flatten(item))
    return flat
