"""Batch x sequence sweep: compile each static shape (or, with ``dynamic``, one build with batch/seq
ranges), measure it, pick the best under a latency SLO.

Artifacts are static-shape, so every (batch, seq) is its own compile. Input
dims are mapped by position: 2-D inputs (token ids, masks) are [batch, seq];
every other input gets batch as dim 0 and keeps its declared remaining dims
(images: only the batch changes). The SLO is on p90 latency, not the median:
a configuration that meets the SLO only half the time does not meet it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import AutoGLMError, DeviceError, InputError, describe


@dataclass
class SweepPoint:
    batch: int
    seq: int | None
    median_ms: float | None = None
    p90_ms: float | None = None
    meets_slo: bool = False
    error: str | None = None
    dropped: int = 0

    @property
    def label(self) -> str:
        return f"b{self.batch}" + (f" s{self.seq}" if self.seq is not None else "")

    @property
    def throughput(self) -> float | None:
        """Samples per second at the median latency."""
        return self.batch * 1000.0 / self.median_ms if self.median_ms else None

    def to_json(self) -> dict:
        return {**self.__dict__, "label": self.label, "throughput": self.throughput}


@dataclass
class SweepResult:
    model: str
    slo_ms: float | None
    points: list[SweepPoint]
    best: SweepPoint | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "slo_ms": self.slo_ms,
            "points": [p.to_json() for p in self.points],
            "best": self.best.to_json() if self.best else None,
            "notes": self.notes,
        }


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated positive integers, e.g. 1,2,4") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"{flag} {text!r}: expected comma-separated positive integers, e.g. 1,2,4")
    return values


def uses_seq(input_specs) -> bool:
    """True when some input is 2-D ([batch, seq] token-like)."""
    return any(len(spec.shape) == 2 for spec in input_specs)


def shapes_for(input_specs, batch: int, seq: int | None) -> dict[str, list[int]]:
    """Static input shapes for one sweep point (``input_specs``: onnx_model.graph_inputs)."""
    shapes = {}
    for spec in input_specs:
        dims = list(spec.shape)
        if not dims:
            continue  # scalar input: nothing to sweep
        if len(dims) == 2 and seq is not None:
            shapes[spec.name] = [batch, seq]
            continue
        rest = dims[1:]
        bad = [d for d in rest if not isinstance(d, int) or d <= 0]
        if bad:
            raise InputError(
                f"input '{spec.name}' has dynamic dims {bad} beyond the batch dim; the sweep only sets batch "
                f"(dim 0) and seq (dim 1 of 2-D inputs): export the model with those dims fixed"
            )
        shapes[spec.name] = [batch, *rest]
    return shapes


def select_best(points: list[SweepPoint], slo_ms: float | None) -> SweepPoint | None:
    """Max throughput among measured points whose p90 meets the SLO; ties go to the lower p90."""
    for p in points:
        p.meets_slo = p.median_ms is not None and p.error is None and (slo_ms is None or (p.p90_ms is not None and p.p90_ms <= slo_ms))
    ok = [p for p in points if p.meets_slo]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.throughput, -(p.p90_ms or 0.0)))


def _default_measure(model, target: str, opt_level: int, repeat: int, tuning_db: str | None) -> Callable[[dict], dict]:
    def measure(shapes: dict) -> dict:
        import tvm_autoglm

        from .timing import Candidate, measure_interleaved

        compiled = tvm_autoglm.compile(model, target=target, opt_level=opt_level, input_shapes=shapes, tuning_db=tuning_db)
        session = compiled._session
        if not hasattr(session, "vm"):  # built for a device this machine does not have
            raise DeviceError(f"target {target}: the sweep measures every shape, which needs the target's device on this machine")
        arrays = session._to_device([compiled.example_inputs()[s["name"]] for s in compiled.inputs])
        fn, dev = session.vm["main"], session.device

        def run():
            fn(*arrays)
            dev.sync()

        (timing,) = measure_interleaved([Candidate("tvm", run)], repeat=repeat, warmup=2)
        return timing.summary()

    return measure


def dynamic_shapes(input_specs, batches: list[int], seqs: list[int] | None) -> dict[str, list]:
    """One dynamic build's ``input_shapes`` covering every sweep point: batch (dim 0) and seq (dim 1 of
    2-D inputs) become ranges (a single value stays a number), other dims as ``shapes_for`` fixes them."""
    low, high = shapes_for(input_specs, min(batches), min(seqs) if seqs else None), shapes_for(input_specs, max(batches), max(seqs) if seqs else None)
    return {name: [a if a == b else (a, b) for a, b in zip(low[name], high[name])] for name in low}


def _dynamic_measure(model, input_specs, batches, seqs, target: str, opt_level: int, repeat: int, tuning_db: str | None) -> Callable[[dict], dict]:
    """``measure`` over one dynamic build (``sweep --dynamic``): compiled on the first point, run at each shape."""
    built: dict = {}

    def measure(shapes: dict) -> dict:
        import numpy as np

        import tvm_autoglm

        from ..runtime.inputs import example_inputs
        from .timing import Candidate, measure_interleaved

        if "model" not in built:
            built["model"] = tvm_autoglm.compile(model, target=target, opt_level=opt_level, input_shapes=dynamic_shapes(input_specs, batches, seqs), tuning_db=tuning_db)
        compiled = built["model"]
        session = compiled._session
        if not hasattr(session, "vm"):
            raise DeviceError(f"target {target}: the sweep measures every shape, which needs the target's device on this machine")
        sizes = {}
        for spec in compiled.inputs:
            for dim, size in zip(spec["shape"], shapes.get(spec["name"], [])):
                if isinstance(dim, str):
                    sizes[dim] = {"min": int(size), "max": int(size)}
        inputs = example_inputs(compiled.inputs, 0, index_ranges=compiled.manifest.get("index_ranges"), symbolic_dims=sizes)
        checked = session._checked(inputs)
        arrays = session._to_device([np.asarray(a) for a in checked])
        fn, dev = session.vm[session.function_for(checked)], session.device

        def run():
            fn(*arrays)
            dev.sync()

        (timing,) = measure_interleaved([Candidate("tvm", run)], repeat=repeat, warmup=2)
        return timing.summary()

    return measure


def run_sweep(
    model,
    batches: list[int],
    seqs: list[int] | None,
    slo_ms: float | None = None,
    target: str = "cpu",
    opt_level: int = 3,
    repeat: int = 15,
    tuning_db: str | None = None,
    measure: Callable[[dict], dict] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
    dynamic: bool = False,
) -> SweepResult:
    """Measure every (batch, seq); ``measure(shapes) -> {"median_ms", "p90_ms", ...}`` is injectable for tests."""
    from .. import onnx_model

    proto, path = onnx_model.load_model(model)
    specs = onnx_model.graph_inputs(proto)
    notes = []
    if seqs and not uses_seq(specs):
        notes.append("the model has no 2-D [batch, seq] input: --seq ignored, only the batch is swept")
        seqs = None
    if measure is None:
        from ..runtime.session import device_for
        from ..targets import load_target

        spec = load_target(target)
        device_for({"target": {"device": spec.device, "name": spec.name}})  # no device: fail before any compile
        if dynamic:  # one build with batch/seq ranges, run at every point
            measure = _dynamic_measure(proto, specs, batches, seqs, target, opt_level, repeat, tuning_db)
            notes.append("one dynamic build (batch/seq ranges) measured at every shape")
        else:
            measure = _default_measure(proto, target, opt_level, repeat, tuning_db)
    points = []
    for batch in batches:
        for seq in seqs or [None]:
            point = SweepPoint(batch, seq)
            try:
                stats = measure(shapes_for(specs, batch, seq))
                point.median_ms, point.p90_ms = stats["median_ms"], stats["p90_ms"]
                point.dropped = int(stats.get("dropped", 0))
            except (InputError, DeviceError):
                raise  # the same for every shape: stop instead of failing each one
            except Exception as err:  # one shape failing to compile must not lose the others
                point.error = err.one_line() if isinstance(err, AutoGLMError) else describe(err)
            points.append(point)
            if on_point:
                on_point(point)
    best = select_best(points, slo_ms)
    return SweepResult(str(path) if path else "model", slo_ms, points, best, notes)


def format_table(result: SweepResult) -> str:
    lines = [f"{'config':<12} {'median ms':>10} {'p90 ms':>10} {'samples/s':>10}  SLO"]
    for p in result.points:
        if p.error:
            lines.append(f"{p.label:<12} failed: {p.error}")
            continue
        mark = "  <- best" if p is result.best else ""
        slo = "ok" if p.meets_slo else "miss"
        lines.append(f"{p.label:<12} {p.median_ms:10.3f} {p.p90_ms:10.3f} {p.throughput:10.1f}  {slo}{mark}")
    if result.best:
        lines.append(f"best under the SLO: {result.best.label}: {result.best.throughput:.1f} samples/s at p90 {result.best.p90_ms:.3f} ms")
    elif result.slo_ms is not None:
        lines.append(f"no configuration meets p90 <= {result.slo_ms} ms")
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)
