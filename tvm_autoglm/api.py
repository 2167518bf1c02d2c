"""The Python API: ``compile`` an ONNX model, ``load`` an artifact.

    import tvm_autoglm
    model = tvm_autoglm.compile("bert.onnx", target="cpu", opt_level=3,
                                input_shapes={"input_ids": [1, 128], "attention_mask": [1, 128]})
    outputs = model.run(input_ids=ids, attention_mask=mask)
    model.export("bert.so")           # or "bert.glm"
    same = tvm_autoglm.load("bert.so")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runtime.inputs import example_inputs
from .runtime.session import Session, summarize


class CompiledModel:
    """A built model: run it in process, benchmark it, or export it."""

    def __init__(self, session: Session, executable=None, build=None, path: Path | None = None, weights=None):
        self._session = session
        self._executable = executable
        self._weights = weights  # --weights external: the WeightTable export writes beside the .so
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
        return example_inputs(self.inputs, seed, index_ranges=self.manifest.get("index_ranges"), symbolic_dims=self.manifest.get("symbolic_dims"))

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
        self.path = export(self._executable, self.manifest, path, weights=self._weights)
        return self.path


def compile(
    model,
    target="cpu",  # a target name, a target file path or a TargetSpec
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
    dynamic_dims: dict | None = None,
    specialize: dict | None = None,
    generate: bool = False,
    max_context: int = 2048,
    prefill_chunk: int | None = None,
    weights: str = "embedded",
) -> CompiledModel:
    """Compile an ONNX model (path or ``onnx.ModelProto``) for ``target``.

    ``generate=True`` builds a generator from a decoder with a KV cache (``tvm_autoglm.generate.build``):
    ``model.generate(input_ids, max_new_tokens=...)``.

    ``freeze_inputs={"sr": 16000}`` binds inputs to constants before import (see ``tvm_autoglm.freeze``).
    A dim given as a range, ``input_shapes={"input_ids": [1, (1, 512)]}``, or an ONNX dim name given one
    in ``dynamic_dims={"seq": (1, 512)}``, stays symbolic: one build runs every size in the range;
    ``specialize={"seq": [128, 256]}`` adds static variants for those sizes, chosen by exact shape.
    ``weights="external"`` keeps the weights out of the library: ``export("m.so")`` writes them to
    ``m.weights`` beside it, memory-mapped at load (``tvm_autoglm.external_weights``).
    """
    from .backends import for_target
    from .pipeline import compile_model
    from .progress import StageLog

    if generate:
        from .errors import AutoGLMError
        from .generate.build import compile_generator_parts

        if freeze_inputs or input_shapes or dynamic_dims or specialize or calibration is not None:
            raise AutoGLMError("generate=True sets the input shapes itself and does not combine with freeze_inputs, "
                               "input_shapes, dynamic_dims, specialize or calibration yet")
        done = compile_generator_parts(
            model, target, opt_level, tuning_db, max_context=max_context, prefill_chunk=prefill_chunk,
            disabled_passes=disabled_passes, use_shipped_schedules=use_shipped_schedules, quantize=quantize,
            accuracy_budget=accuracy_budget, log=StageLog(enabled=verbose), weights=weights)
        return _compiled(done, Session)
    done = compile_model(
        model, target, opt_level, input_shapes, tuning_db, disabled_passes=disabled_passes,
        use_shipped_schedules=use_shipped_schedules, quantize=quantize, accuracy_budget=accuracy_budget,
        calibration=calibration, freeze_inputs=freeze_inputs, log=StageLog(enabled=verbose), weights=weights,
        dynamic_dims=dynamic_dims, specialize={k: list(v) for k, v in (specialize or {}).items()} or None,
    )
    return _compiled(done, Session if for_target(done.build.target).runs_on_build_host else _lazy_session)


def _compiled(done, make_session) -> CompiledModel:
    """A ``CompiledModel`` of ``pipeline.Compiled``; an external-weights build runs on its in-memory weights until exported."""
    table = done.scheduled.weights if done.scheduled is not None else None
    session = make_session(done.executable, done.manifest, weights=table.tensors if table is not None else None)
    return CompiledModel(session, done.executable, done.build, weights=table)


def _lazy_session(executable, manifest, weights=None):
    """GPU builds can be exported without a GPU; running them needs one.

    Only the missing device is deferred (to the first run, with its own message); any
    other failure to make the session is a real error and propagates now.
    """
    from .errors import DeviceError

    try:
        return Session(executable, manifest, weights=weights)
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
