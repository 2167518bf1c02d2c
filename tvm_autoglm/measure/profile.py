"""Time per kernel of a compiled model through the Relax VM's instrument hook.

``vm.profile()`` is gone in TVM 0.27; ``vm.set_instrument(fn)`` calls
``fn(func, symbol, before_run, ret_value, *args)`` around every VM Call
instruction, and a return of ``VMInstrumentReturnKind.NO_OP`` (0) lets the call
run. On CPU a kernel is synchronous, so the wall time between the before and
after callbacks is the kernel's time (plus a few microseconds of callback
overhead, reported separately as "VM + instrument overhead").

FLOPs come from the manifest's ``kernel_flops`` (counted at compile time: the
``.so`` has no TIR left), and GFLOP/s are positioned against the machine's
measured fp32 peak.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

from .timing import CleanRunFilter, read_run_queue_wait, wait_delta_ns

BUILTIN_PREFIX = "vm.builtin."
BUILTINS_ROW = "VM builtins (alloc, shape checks)"
OVERHEAD_ROW = "VM + instrument overhead"


@dataclass
class KernelRow:
    name: str
    calls: int
    ms: float  # per inference (mean over clean runs)
    share: float  # of the instrumented total
    flops: float | None
    gflops: float | None
    peak_fraction: float | None
    kind: str  # "kernel" | "builtin" | "overhead"

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Profile:
    rows: list[KernelRow]
    total_ms: float  # instrumented run, mean over clean runs
    plain_ms: float  # uninstrumented run, median
    runs: int
    dropped: int
    topped_up: int = 0
    peak: dict | None = None
    machine: dict | None = None
    binary: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def kernels(self) -> list[KernelRow]:
        return [r for r in self.rows if r.kind == "kernel"]

    def to_json(self) -> dict:
        return {
            "binary": self.binary,
            "total_ms": self.total_ms,
            "uninstrumented_ms": self.plain_ms,
            "runs": self.runs,
            "dropped_runs": self.dropped,
            "topped_up_runs": self.topped_up,
            "peak": self.peak,
            "machine": self.machine,
            "rows": [r.to_json() for r in self.rows],
            "notes": self.notes,
        }


class _Recorder:
    """The instrument callback: accumulates seconds per symbol for the current run."""

    def __init__(self):
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def reset(self):
        self.starts.clear()
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)

    def __call__(self, func, symbol, before_run, ret_value, *args):
        now = time.perf_counter()
        symbol = str(symbol)
        if before_run:
            self.starts[symbol].append(now)
        else:
            stack = self.starts.get(symbol)
            if stack:
                self.seconds[symbol] += now - stack.pop()
                self.calls[symbol] += 1
        return 0  # VMInstrumentReturnKind.NO_OP


def profile_session(session, inputs: dict, repeat: int = 10, warmup: int = 2, peak: dict | None = None, run_filter: CleanRunFilter | None = None) -> Profile:
    """Per-kernel times of ``session`` (a runtime.Session) on ``inputs``, mean over clean runs."""
    run_filter = run_filter or CleanRunFilter()
    # the session's own check: a dynamic build's symbolic dims are bounded by its manifest ranges
    checked = session._checked(inputs)
    arrays = session._to_device(checked)
    main = session.vm[session.function_for(checked)]  # what run() calls: a --specialize variant where one fits
    device = session.device

    plain = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        main(*arrays)
        device.sync()
        if i >= warmup:
            plain.append(time.perf_counter() - start)

    recorder = _Recorder()
    session.vm.set_instrument(recorder)
    per_run: list[tuple[float, dict, dict]] = []
    rejected: list[tuple[float, tuple[float, dict, dict]]] = []
    try:
        for _ in range(warmup):
            main(*arrays)
        attempts = 0
        while len(per_run) < repeat and attempts < 3 * repeat:
            attempts += 1
            recorder.reset()
            before = read_run_queue_wait()
            start = time.perf_counter()
            main(*arrays)
            device.sync()
            total = time.perf_counter() - start
            wait = wait_delta_ns(before, read_run_queue_wait())
            record = (total, dict(recorder.seconds), dict(recorder.calls))
            if run_filter.is_clean(total, wait):
                per_run.append(record)
            else:
                rejected.append((wait / (total * 1e9) if total > 0 else 1.0, record))
    finally:
        session.vm.set_instrument(_no_op)

    dropped = len(rejected)
    topped_up = 0
    min_clean = repeat
    for _, record in sorted(rejected, key=lambda item: item[0])[: max(0, min_clean - len(per_run))]:
        per_run.append(record)
        topped_up += 1
    profile = _aggregate(per_run, plain, dropped, session.manifest, peak)
    profile.topped_up = topped_up
    if topped_up:
        profile.notes.append(f"machine saturated: only {len(per_run) - topped_up} clean runs; the {topped_up} least-waited dropped runs were used too")
    return profile


def interleaved_kernel_ms(sessions: dict, inputs: dict, rounds: int, repeat: int = 3, warmup: int = 1, discard_rounds: int = 0) -> tuple[dict, dict]:
    """Profile each session once per round, in turn; per label: ``{kernel: [ms per round]}`` and ``[kernel sum per round]``.

    Why rounds, not one profile per build: on a shared box the same build's kernels move by
    30% from one minute to the next, so builds are only comparable when measured in the same
    minutes. Every round profiles each session in the same order. ``discard_rounds`` leading
    rounds are run and dropped, so that the first session's first profile does not pay alone
    for cold caches and a sleeping thread pool.
    """
    per_kernel = {label: {} for label in sessions}
    totals = {label: [] for label in sessions}
    for index in range(discard_rounds + rounds):
        for label, session in sessions.items():
            prof = profile_session(session, inputs, repeat=repeat, warmup=warmup)
            if index < discard_rounds:
                continue
            for row in prof.kernels:
                per_kernel[label].setdefault(row.name, []).append(row.ms)
            totals[label].append(sum(row.ms for row in prof.kernels))
    return per_kernel, totals


def _no_op(*_args):
    return 0


def _aggregate(per_run, plain, dropped, manifest: dict, peak: dict | None) -> Profile:
    # Means, not medians: the mean of per-run sums is the sum of per-kernel means, so kernel
    # times add up to at most the total and the shares are consistent (disturbed runs are
    # already gone). Medians of parts do not add up to the median of the whole.
    total_ms = statistics.fmean(t for t, _, _ in per_run) * 1000.0
    symbols = sorted({s for _, secs, _ in per_run for s in secs})
    flops_table = manifest.get("kernel_flops") or {}
    known = set(manifest.get("kernels") or [])
    rows: list[KernelRow] = []
    builtin_ms = 0.0
    builtin_calls = 0
    for sym in symbols:
        ms = statistics.fmean(secs.get(sym, 0.0) for _, secs, _ in per_run) * 1000.0
        calls = max(calls.get(sym, 0) for _, _, calls in per_run)
        if sym.startswith(BUILTIN_PREFIX) and sym not in known:
            builtin_ms += ms
            builtin_calls += calls
            continue
        flops = flops_table.get(sym)
        flops = flops * calls if flops is not None else None
        gflops = flops / (ms / 1000.0) / 1e9 if flops and ms > 0 else None
        frac = gflops / peak["gflops"] if gflops is not None and peak and peak.get("gflops") else None
        rows.append(KernelRow(sym, calls, ms, 0.0, flops, gflops, frac, "kernel"))
    rows.sort(key=lambda r: r.ms, reverse=True)
    if builtin_calls:
        rows.append(KernelRow(BUILTINS_ROW, builtin_calls, builtin_ms, 0.0, None, None, None, "builtin"))
    overhead = max(0.0, total_ms - sum(r.ms for r in rows))
    rows.append(KernelRow(OVERHEAD_ROW, 0, overhead, 0.0, None, None, None, "overhead"))
    for row in rows:
        row.share = row.ms / total_ms if total_ms > 0 else 0.0
    notes = []
    missing = [r.name for r in rows if r.kind == "kernel" and r.flops is None]
    if missing and not flops_table:
        notes.append("the manifest has no kernel_flops (built before they were recorded): GFLOP/s not shown; rebuild to get them")
    return Profile(rows, total_ms, statistics.median(plain) * 1000.0 if plain else float("nan"), len(per_run), dropped, peak=peak, notes=notes)


def format_table(profile: Profile, top: int | None = None) -> str:
    """Plain-text table for the terminal."""
    rows = profile.rows if top is None else profile.kernels[:top] + [r for r in profile.rows if r.kind != "kernel"]
    width = min(70, max([len(r.name) for r in rows] + [6]))
    lines = [f"{'kernel':<{width}}  {'calls':>5}  {'ms':>9}  {'share':>6}  {'GFLOP/s':>8}  {'% peak':>6}"]
    for r in rows:
        name = r.name if len(r.name) <= width else r.name[: width - 3] + "..."
        gf = f"{r.gflops:8.2f}" if r.gflops is not None else f"{'-':>8}"
        pk = f"{100 * r.peak_fraction:5.1f}%" if r.peak_fraction is not None else f"{'-':>6}"
        lines.append(f"{name:<{width}}  {r.calls:>5}  {r.ms:9.3f}  {100 * r.share:5.1f}%  {gf}  {pk}")
    lines.append(
        f"total {profile.total_ms:.3f} ms instrumented, {profile.plain_ms:.3f} ms without the hook; "
        f"{profile.runs - profile.topped_up} clean runs (+{profile.topped_up} least-waited), {profile.dropped} dropped (threads waited for a CPU)"
    )
    if profile.peak:
        lines.append(f"measured fp32 peak: {profile.peak['gflops']:.1f} GFLOP/s with {profile.peak['threads']} threads ({profile.peak['method']})")
    lines.extend(f"note: {n}" for n in profile.notes)
    return "\n".join(lines)
