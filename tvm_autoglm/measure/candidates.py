"""The things ``auto-glm bench`` races: our artifacts, onnxruntime, OpenVINO, PyTorch.

Each becomes a ``timing.Candidate`` whose ``run()`` does one synchronous
inference on inputs already prepared, so only the runtime is timed, never
input conversion. The baselines are given their best shot: onnxruntime gets
the fastest of its graph optimisation levels (measured, not assumed) with the
same thread count, OpenVINO its latency mode with the same threads (f32 and, separately,
its default precision), PyTorch the same threads under ``inference_mode``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import AutoGLMError, InputError
from .timing import Candidate


@dataclass
class Prepared:
    candidate: Candidate
    detail: str  # e.g. "onnxruntime 1.32.0, ORT_ENABLE_ALL, 2 intra-op threads"
    outputs: object = None  # callable returning outputs (name -> array), for parity checks


def tvm_candidate(path: str, inputs: dict, name: str | None = None) -> Prepared:
    """A compiled ``.so``/``.glm``; inputs are validated against its manifest."""
    from ..native_log import quiet_native_stderr
    from ..runtime import Session

    with quiet_native_stderr():
        session = Session.open(path)
    checked = session._checked(inputs)  # the session's own check: symbolic dims within the manifest's ranges
    arrays = session._to_device(checked)
    fn, dev = session.vm[session.function_for(checked)], session.device  # a --specialize variant where one fits

    def run():
        fn(*arrays)
        dev.sync()

    manifest = session.manifest
    detail = f"tvm_autoglm O{manifest.get('opt_level')} {manifest.get('target', {}).get('name', '?')}, {len(manifest.get('kernels', []))} kernels"
    return Prepared(Candidate(name or Path(path).name, run), detail, lambda: session.run(inputs))


ORT_LEVELS = ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC")


def ort_session(model, threads: int, level: str = ORT_LEVELS[0], log_severity: int = 3):
    """The one way an onnxruntime session is made: ``threads`` intra-op threads (ours), inter-op 1, sequential, CPU.

    ``model`` is a path or the serialized bytes of a model. Every peer and every reference
    session of ``auto-glm bench`` and of benchmarks/ comes from here, so that onnxruntime
    always runs under the same thread settings as the build it is compared with. The
    differential tests pass ``log_severity=4`` because they feed onnxruntime models it may reject.
    """
    import onnxruntime as ort

    if level not in ORT_LEVELS:
        raise ValueError(f"onnxruntime level {level!r}: expected one of {ORT_LEVELS}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = log_severity
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def ort_candidate(model_path: str, inputs: dict, threads: int, probe_runs: int = 5) -> Prepared:
    """onnxruntime at its fastest optimisation level (probed: best median of ``probe_runs``)."""
    import onnxruntime as ort

    if not Path(model_path).is_file():
        raise InputError(f"--vs ort needs the ONNX model: {model_path} not found (give it with --model)")
    feeds_cache = None
    best = None
    for level in ORT_LEVELS:
        session = ort_session(model_path, threads, level)
        if feeds_cache is None:
            wanted = [i.name for i in session.get_inputs()]
            missing = [n for n in wanted if n not in inputs]
            if missing:
                raise InputError(f"{model_path} wants input(s) {missing} the artifact does not take: is --model the model the artifact was built from?")
            feeds_cache = {n: inputs[n] for n in wanted}
        session.run(None, feeds_cache)
        times = []
        for _ in range(probe_runs):
            start = time.perf_counter()
            session.run(None, feeds_cache)
            times.append(time.perf_counter() - start)
        median = sorted(times)[len(times) // 2]
        if best is None or median < best[0]:
            best = (median, level, session)
    _, level, session = best
    feeds = feeds_cache
    names = [o.name for o in session.get_outputs()]

    def run():
        session.run(None, feeds)

    def outputs():
        return dict(zip(names, session.run(None, feeds)))

    return Prepared(Candidate("onnxruntime", run, pool=f"onnxruntime-{id(session)}"), f"onnxruntime {ort.__version__}, {level} (fastest of {len(ORT_LEVELS)} levels), {threads} intra-op threads", outputs)


OPENVINO_KEYS = ("openvino", "ov", "openvino-f32", "ov-f32")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_candidates(model_path: str, inputs: dict, threads: int, default_precision: bool = True) -> list[Prepared]:
    """OpenVINO on the CPU, latency mode, ``threads`` inference threads: f32, and its default precision.

    Its default precision is not f32 everywhere: on a CPU with AVX512-BF16 (or AMX) it runs
    bf16, which is a different accuracy class, so it is a separate candidate named after the
    precision the compiled model actually reports (``INFERENCE_PRECISION_HINT`` read back).
    The model is reshaped to the given inputs (symbolic dims fixed) before compiling.
    """
    import numpy as np
    import openvino as ov

    if not Path(model_path).is_file():
        raise InputError(f"--vs openvino needs the ONNX model: {model_path} not found (give it with --model)")
    core = ov.Core()
    model = core.read_model(model_path)
    wanted = [port.get_any_name() for port in model.inputs]
    missing = [n for n in wanted if n not in inputs]
    if missing:
        raise InputError(f"{model_path} wants input(s) {missing} the artifact does not take: is --model the model the artifact was built from?")
    model.reshape({n: list(np.shape(inputs[n])) for n in wanted})
    feeds = [inputs[n] for n in wanted]
    configs = [("openvino-f32", {"INFERENCE_PRECISION_HINT": "f32"})]
    if default_precision:
        configs.append(("openvino-default", {}))
    prepared = []
    for name, extra in configs:
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, **extra}
        compiled = core.compile_model(model, "CPU", config)
        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower().removeprefix("<type: '").removesuffix("'>")
        request = compiled.create_infer_request()
        request.infer(feeds)
        names = [port.get_any_name() for port in compiled.outputs]

        def run(request=request):
            request.infer(feeds)

        def outputs(request=request, names=names):
            result = request.infer(feeds)
            return {n: np.array(result[i]) for i, n in enumerate(names)}

        label = name if name == "openvino-f32" else f"openvino-default-{precision}"
        detail = f"openvino {ov.__version__}, LATENCY hint, {threads} threads, inference precision {precision}" + (
            " (its default)" if name == "openvino-default" else " (INFERENCE_PRECISION_HINT=f32)"
        )
        prepared.append(Prepared(Candidate(label, run, pool=f"openvino-{id(compiled)}"), detail, outputs))
    return prepared


_ZOO_FILE = re.compile(r"^(?P<name>.+)-(?P<size>[A-Za-z0-9_]+)-(?P<seq>s\d+|img)-b(?P<batch>\d+)-(?P<exporter>[a-z]+)-seed(?P<seed>\d+)(?:-dyn)?\.onnx$")


def zoo_origin(model_path: str | None) -> dict | None:
    """(name, size, seq, batch, seed) when ``model_path`` is a zoo cache file; None otherwise."""
    if not model_path:
        return None
    match = _ZOO_FILE.match(Path(model_path).name)
    if not match:
        return None
    try:
        from .. import zoo
    except ImportError:
        return None
    if match["name"] not in zoo.MODELS:
        return None
    seq = int(match["seq"][1:]) if match["seq"].startswith("s") else 224
    return {"name": match["name"], "size": match["size"], "seq": seq, "batch": int(match["batch"]), "seed": int(match["seed"])}


def torch_candidate(model_path: str | None, inputs: dict, threads: int, origin: dict | None = None) -> Prepared:
    """PyTorch eager, rebuilt from the zoo with the same seed (so the same weights) as the ONNX file."""
    origin = origin or zoo_origin(model_path)
    if origin is None:
        raise AutoGLMError(
            f"--vs torch: {model_path or 'the model'} is not a zoo model, so there is no PyTorch module to rebuild",
            hint="PyTorch comparison works for models made by `auto-glm zoo` (their cache name encodes how to rebuild them)",
        )
    from .. import zoo
    from ..zoo._torch import require_torch

    torch = require_torch()
    torch.set_num_threads(threads)
    module = zoo.torch_module(origin["name"], origin["size"], origin["seq"], origin["batch"], seed=origin["seed"])
    order = list(zoo.MODELS[origin["name"]].inputs)
    missing = [n for n in order if n not in inputs]
    if missing:
        raise InputError(f"--vs torch: the artifact's inputs lack {missing} that the zoo module takes")
    args = tuple(torch.from_numpy(inputs[n]) for n in order)

    def run():
        with torch.inference_mode():
            module(*args)

    def outputs():
        with torch.inference_mode():
            out = module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(zoo.MODELS[origin["name"]].outputs, (o.numpy() for o in out)))

    return Prepared(Candidate("pytorch", run, pool="torch"), f"torch {torch.__version__} eager (zoo {origin['name']}-{origin['size']}), {threads} threads", outputs)
