"""The one benchmark harness: how every peer is set up and how everything is timed.

Why one module: the scripts in benchmarks/ used to make onnxruntime sessions five
different ways (threads unset, hard-coded 2, inter-op 1, level probing) and time
with their own ``perf_counter`` loops, so their numbers did not compare with each
other nor with ``auto-glm bench``. Everything that races builds goes through here:

* threads: :func:`use_threads` once, before any thread pool starts; every peer then
  gets that count ("ours");
* onnxruntime: its fastest graph optimisation level (probed), intra-op threads = ours,
  inter-op 1 (:func:`candidates.ort_candidate`, sessions from :func:`candidates.ort_session`);
* OpenVINO: ``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_NUM_THREADS`` = ours, f32 and its
  default precision as two separately named candidates (:func:`candidates.openvino_candidates`);
* PyTorch: ``torch.set_num_threads(ours)`` (:func:`candidates.torch_candidate`);
* timing: :func:`race` = wait for an idle machine, then interleaved rounds with
  disturbed rounds dropped and counted (:mod:`measure.timing`).

tests/measure/test_harness.py checks that no script in benchmarks/ makes its own
onnxruntime session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import InputError
from . import candidates as cands
from .candidates import Prepared, ort_candidate, ort_session, torch_candidate, tvm_candidate  # noqa: F401  (the harness API)
from .machine import machine_info, use_threads  # noqa: F401
from .timing import TVM_POOL, Candidate, Timings, drop_note, measure_interleaved, wait_for_idle

#: Keys of the peers :func:`peer_candidates` knows, as ``auto-glm bench --vs`` spells them.
PEER_KEYS = ("ort", "onnxruntime", *cands.OPENVINO_KEYS, "torch", "pytorch")


def peer_candidates(keys: list[str], model: str | None, inputs: dict, threads: int, notes: list[str] | None = None) -> list[Prepared]:
    """onnxruntime / OpenVINO / PyTorch candidates for ``keys``, each set up the one way described above.

    A peer that cannot run here (OpenVINO not installed, a model PyTorch cannot rebuild)
    is skipped with a line appended to ``notes``; an unknown key or a missing model is a user error.
    """
    notes = notes if notes is not None else []
    prepared: list[Prepared] = []
    for item in keys:
        key = item.lower()
        if key in ("ort", "onnxruntime"):
            if not model:
                raise InputError("--vs ort needs the ONNX model: the manifest has no source path, give --model")
            prepared.append(ort_candidate(model, inputs, threads))
        elif key in cands.OPENVINO_KEYS:
            if not model:
                raise InputError("--vs openvino needs the ONNX model: the manifest has no source path, give --model")
            if not cands.openvino_available():
                notes.append("--vs openvino skipped: openvino is not installed (pip install 'tvm_autoglm[peers]')")
                continue
            prepared.extend(cands.openvino_candidates(model, inputs, threads, default_precision=not key.endswith("-f32")))
        elif key in ("torch", "pytorch"):
            origin = cands.zoo_origin(model)
            if origin is None:
                notes.append(f"--vs torch skipped: {model or 'the model'} is not a zoo model (no PyTorch module to rebuild)")
                continue
            prepared.append(torch_candidate(model, inputs, threads, origin))
        else:
            raise InputError(f"--vs {item!r}: expected ort, openvino, openvino-f32, torch, or a path to another .so/.glm")
    return prepared


def ort_reference(model, inputs: dict, threads: int) -> dict:
    """Outputs (name -> array) of ``model`` (path or bytes) under onnxruntime, for a parity check."""
    session = ort_session(model, threads)
    wanted = [i.name for i in session.get_inputs()]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {n: inputs[n] for n in wanted})))


def ort_runner(model, threads: int) -> Callable[[dict], list]:
    """``feeds -> outputs`` of one onnxruntime session (default level, our threads), for inputs that vary per call."""
    session = ort_session(model, threads)
    return lambda feeds: session.run(None, feeds)


def session_candidate(name: str, session, inputs: dict, detail: str = "") -> Prepared:
    """An in-process build (a runtime ``Session``, or a ``CompiledModel``'s) timed on device arrays prepared once.

    Only the VM call and a device sync are timed, as for an exported artifact
    (:func:`candidates.tvm_candidate`), never input conversion.
    """
    session = getattr(session, "_session", session)  # a CompiledModel wraps its Session
    checked = session._checked(inputs)  # the session's own check: symbolic dims within the manifest's ranges
    arrays = session._to_device(checked)
    fn, dev = session.vm[session.function_for(checked)], session.device  # a --specialize variant where one fits

    def run():
        fn(*arrays)
        dev.sync()

    return Prepared(Candidate(name, run, pool=TVM_POOL), detail or f"tvm_autoglm in-process build, {len(session.manifest.get('kernels', []))} kernels",
                    lambda: session.run(inputs))


def vm_candidate(name: str, vm, device, arrays: list, detail: str = "") -> Prepared:
    """A bare Relax VM (a kernel built outside the pipeline) on device arrays prepared once."""
    fn = vm["main"]

    def run():
        fn(*arrays)
        device.sync()

    return Prepared(Candidate(name, run, pool=TVM_POOL), detail or "relax VM")


def function_candidate(name: str, fn: Callable[[], object], pool: str, detail: str = "") -> Prepared:
    """Anything else (numpy's BLAS, a GPU library): ``fn`` runs once synchronously; ``pool`` names its thread pool."""
    return Prepared(Candidate(name, fn, pool=pool), detail or name)


@dataclass
class Race:
    """The result of :func:`race`: per-candidate summaries in the order given, plus how clean the window was."""

    rows: list[dict]
    timings: list[Timings]
    idle: dict
    dropped: str
    machine: dict
    notes: list[str] = field(default_factory=list)

    def median_ms(self, name: str) -> float:
        for row in self.rows:
            if row["name"] == name:
                return row["median_ms"]
        raise KeyError(f"no candidate named {name!r} in this race: {[r['name'] for r in self.rows]}")

    def to_json(self) -> dict:
        return {"candidates": self.rows, "machine": self.machine, "idle": self.idle, "dropped": self.dropped, "notes": self.notes}


def race(prepared: list[Prepared], repeat: int = 20, warmup: int = 3, idle_wait: float = 30.0, threads: int | None = None,
         log: Callable[[str], object] | None = None, **measure_kwargs) -> Race:
    """Time ``prepared`` the one way: wait (bounded) for an idle machine, then interleaved rounds.

    Candidate names must be unique (a duplicate is renamed ``name#i``). Rows carry the
    median/min/max/p90 over clean rounds, the dropped-round counts and the ratio to the first
    candidate. ``measure_kwargs`` go to :func:`timing.measure_interleaved` (tests inject clocks).
    """
    if not prepared:
        raise InputError("nothing to time: no candidates")
    names = [p.candidate.name for p in prepared]
    for i, name in enumerate(names):
        if names.count(name) > 1:
            prepared[i].candidate.name = f"{name}#{i}"
    idle = wait_for_idle(max_wait_s=idle_wait)
    if log:
        log(idle.text())
    timings = measure_interleaved([p.candidate for p in prepared], repeat=repeat, warmup=warmup, **measure_kwargs)
    base = timings[0].summary()["median_ms"]
    rows = []
    for p, t in zip(prepared, timings):
        s = t.summary()
        rows.append({"name": t.name, "detail": p.detail, **s, "ratio_to_first": s["median_ms"] / base if base else None})
    return Race(rows, timings, idle.__dict__, drop_note(timings), machine_info(threads))


def time_alone(prepared: Prepared, repeat: int, warmup: int = 0, **measure_kwargs) -> Timings:
    """Runs of one candidate with nothing interleaved: a build too slow to share rounds (O0 on a real
    model), or one that cannot share a process (bench_gpu times each build in a child). Disturbed
    runs are still dropped and counted."""
    return measure_interleaved([prepared.candidate], repeat=repeat, warmup=warmup, **measure_kwargs)[0]
