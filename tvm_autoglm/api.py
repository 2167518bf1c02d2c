"""The Python API: ``compile`` an ONNX model, ``load`` an artifact.

    import tvm_autoglm
    model = tvm_autoglm.compile("bert.onnx", target="cpu", opt_level=3,
                                input_shapes={"input_ids": [1, 128], "attention_mask": [1, 128]})
    outputs = model.run(input_ids=ids, attention_mask=mask)
    model.export("bert.so")           # or "bert.glm"
    same = tvm_autoglm.load("bert.so")
"""

from __future__ import annotations

import contextlib

from pathlib import Path

import numpy as np

from .runtime.inputs import example_inputs
from .runtime.session import Session, summarize


class CompiledModel:
    """A built model: run it in process, benchmark it, or export it."""

    def __init__(self, session: Session, executable=None, build=None, path: Path | None = None):
        self._session = session
        self._executable = executable
        self.build = build
        self.path = path

    @property
    def manifest(self) -> dict:
        return self._session.manifest

    @property
    def inputs(self) -> list[dict]:
        return self._session.input_specs

    @property
    def outputs(self) -> list[dict]:
        return self._session.output_specs

    @property
    def kernels(self) -> list[str]:
        return list(self.manifest.get("kernels", []))

    def run(self, inputs: dict | None = None, **kwargs) -> dict[str, np.ndarray]:
        return self._session.run(inputs, **kwargs)

    def example_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        return example_inputs(self.inputs, seed, index_ranges=self.manifest.get("index_ranges"))

    def benchmark(self, inputs: dict | None = None, repeat: int = 20, warmup: int = 3) -> dict:
        """Median/min/max/p90 latency in ms of ``repeat`` runs after ``warmup``."""
        return summarize(self._session.latencies(inputs or self.example_inputs(), repeat=repeat, warmup=warmup))

    def generate(self, input_ids, max_new_tokens: int = 64, **kwargs):
        """Generate token ids with a generator build (``compile(..., generate=True)``); see ``tvm_autoglm.generate.loop``."""
        return self._session.generate(input_ids, max_new_tokens, **kwargs)

    def export(self, path) -> Path:
        from .artifact import export

        if self._executable is None:
            raise ValueError("this model was loaded from an artifact; copy the file instead of re-exporting")
        from .npu import export_options_for

        self.path = export(self._executable, self.manifest, path, export_options_for(self.manifest))
        return self.path


def compile(
    model,
    target: str = "cpu",
    opt_level: int = 3,
    input_shapes: dict[str, list[int]] | None = None,
    tuning_db: str | None = None,
    *,
    disabled_passes: tuple[str, ...] = (),
    use_shipped_schedules: bool = True,
    quantize: str = "none",
    accuracy_budget: float | None = None,
    calibration=None,
    freeze_inputs: dict | None = None,
    verbose: bool = False,
    generate: bool = False,
    max_context: int = 2048,
    prefill_chunk: int | None = None,
) -> CompiledModel:
    """Compile an ONNX model (path or ``onnx.ModelProto``) for ``target``.

    ``generate=True`` builds a generator from a decoder with a KV cache (``tvm_autoglm.generate.build``):
    ``model.generate(input_ids, max_new_tokens=...)``.

    ``freeze_inputs={"sr": 16000}`` binds inputs to constants before import (see ``tvm_autoglm.freeze``).
    """
    from .progress import StageLog

    if generate:
        from .errors import AutoGLMError
        from .generate.build import compile_generator_parts

        if quantize != "none" or freeze_inputs or input_shapes:
            raise AutoGLMError("generate=True sets the input shapes itself and does not combine with quantize, freeze_inputs or input_shapes yet")
        build, _, executable, manifest = compile_generator_parts(
            model, target, opt_level, tuning_db, max_context=max_context, prefill_chunk=prefill_chunk,
            disabled_passes=disabled_passes, use_shipped_schedules=use_shipped_schedules, log=StageLog(enabled=verbose))
        return CompiledModel(Session(executable, manifest), executable, build)
    build, scheduled, executable, manifest = compile_parts(
        model, target, opt_level, input_shapes, tuning_db, disabled_passes=disabled_passes,
        use_shipped_schedules=use_shipped_schedules, quantize=quantize, accuracy_budget=accuracy_budget,
        calibration=calibration, freeze_inputs=freeze_inputs, log=StageLog(enabled=verbose),
    )
    session = Session(executable, manifest) if build.target.device == "cpu" else _lazy_session(executable, manifest)
    return CompiledModel(session, executable, build)


def compile_parts(
    model,
    target,
    opt_level: int,
    input_shapes,
    tuning_db,
    *,
    disabled_passes: tuple[str, ...] = (),
    print_ir_after: tuple[str, ...] = (),
    use_shipped_schedules: bool = True,
    quantize: str = "none",
    accuracy_budget: float | None = None,
    calibration=None,
    freeze_inputs: dict | None = None,
    log=None,
):
    """(build, scheduled, executable, manifest): the one compile flow behind ``compile`` and ``auto-glm compile``.

    Kept in one place because the flow has policy that both front ends must share:
    the passes a precision mode turns off, and NPU tile records applying during
    partitioning (inside ``build_relax``) rather than at scheduling.
    """
    from .artifact import make_manifest
    from .pipeline import build_executable, build_relax, schedule
    from .quantize import passes_off_for
    from .targets import TargetSpec, load_target

    spec = target if isinstance(target, TargetSpec) else load_target(target)
    disabled = tuple(disabled_passes)
    disabled += tuple(p for p in passes_off_for(quantize) if p not in disabled)
    records = contextlib.nullcontext()
    if tuning_db and spec.kind == "npu":
        # NPU tile choice happens inside build_relax (partitioning), so its records apply there.
        from .npu.ms_tune import records_scope

        records = records_scope(tuning_db)
    with records:
        build = build_relax(model, spec, opt_level, input_shapes, disabled, tuple(print_ir_after), log=log, freeze_inputs=freeze_inputs)
    if quantize and quantize != "none":
        from .quantize import apply_quantization

        build = apply_quantization(build, quantize, budget=accuracy_budget, calibration=calibration, log=log)
    scheduled = schedule(build, tuning_db, use_shipped_schedules, log=log)
    executable = build_executable(scheduled, build, log=log)
    return build, scheduled, executable, make_manifest(build, scheduled)


def _lazy_session(executable, manifest):
    """GPU builds can be exported without a GPU; running them needs one.

    Only the missing device is deferred (to the first run, with its own message); any
    other failure to make the session is a real error and propagates now.
    """
    from .errors import DeviceError

    try:
        return Session(executable, manifest)
    except DeviceError as err:
        return _Unrunnable(manifest, err)


class _Unrunnable:
    """A built model that cannot run here: every run raises the reason the session could not be made."""

    def __init__(self, manifest, reason: Exception):
        self.manifest = manifest
        self.input_specs = manifest["inputs"]
        self.output_specs = manifest["outputs"]
        self.reason = reason

    def run(self, *args, **kwargs):
        raise self.reason

    latencies = run


def load(path) -> CompiledModel:
    """Load an exported ``.so`` (manifest beside it) or ``.glm``; checks sha256 first."""
    return CompiledModel(Session.open(path), path=Path(path))
