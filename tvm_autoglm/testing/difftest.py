"""Differential testing against onnxruntime: random small graphs, every opt level, both vector widths.

    python -m tvm_autoglm.testing.difftest --count 2000 --seed 0 --out difftest-out

Each case (``cases.make_case(seed, index)``, one op family per case) is built for
the host at every requested opt level (default O0-O3), run, and compared with
onnxruntime. It is also compiled for ``cpu-x86-avx2`` and ``cpu-x86-avx512``
(``targets/*.json``) at the highest requested level, and the one the host can
execute is run too, so both vector widths are exercised on whatever CPU runs this.

Outcomes, worst build first:

- ``crash``: the worker process died (signal) or hung while on this case;
- ``internal_error``: any exception other than ``AutoGLMError``, or an
  ``AutoGLMError`` raised after the support check had accepted the model;
- ``mismatch``: an output differs from onnxruntime's beyond the tolerance;
- ``refused``: the support check rejected the model (``UnsupportedModelError``): acceptable;
- ``no_memory``: the compile-memory guard refused because the machine was short of free memory
  at that moment (``OutOfMemoryError``): no verdict on the compiler; the summary lists these
  cases under ``unchecked`` so they can be rerun (``--start I --count 1``);
- ``invalid``: onnxruntime itself rejected the generated model (a generator bug, reported, not ours);
- ``match``.

Tolerance, relative to the scale of the output: ``|ours - ref| <= RTOL * max|ref| + ATOL``
elementwise, with ``RTOL = 1e-4`` and ``ATOL = 1e-6``; shapes must be equal and
NaN/Inf must sit at the same places. A wrong answer is off by O(max|ref|); float32
rounding over these small reductions (at most a few hundred terms) and the fast_math
erf/tanh approximations stay below 1e-5 of it.

Cases run in a worker child (``isolation.run_isolated``), so a segfault is recorded as
that case's crash and the campaign goes on. Progress goes to stderr, a JSON summary
to stdout; failing models (ONNX + inputs .npz) are saved to ``--out``; the exit code
is 1 when any case is a mismatch, an internal error or a crash.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import AutoGLMError, UnsupportedModelError, describe
from ..resources import OutOfMemoryError

RTOL = 1e-4
ATOL = 1e-6
ISA_TARGETS = ("cpu-x86-avx2", "cpu-x86-avx512")
FAILURES = ("crash", "internal_error", "mismatch")
#: worst first: a case's outcome is the worst of its builds'
SEVERITY = ("crash", "internal_error", "mismatch", "no_memory", "invalid", "refused", "match")

#: CPU flags (``/proc/cpuinfo``) a target's mcpu needs before its code may run here
_ISA_FLAGS = {
    "cpu-x86-avx2": {"avx2", "fma"},
    "cpu-x86-avx512": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"},
}


@lru_cache(maxsize=1)
def host_flags() -> frozenset:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def host_runs(target: str) -> bool:
    """Whether code built for ``target`` (one of ``ISA_TARGETS``) can execute on this CPU."""
    return _ISA_FLAGS[target] <= host_flags()


def compare(ours: np.ndarray, ref: np.ndarray) -> dict:
    """``{"ok": bool, "max_err", "tol", "why"}`` under the module's tolerance."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return {"ok": False, "why": f"shape {list(ours.shape)} vs onnxruntime {list(ref.shape)}"}
    ours64, ref64 = ours.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(ref64)
    if not np.array_equal(np.isfinite(ours64), finite) or not np.array_equal(ours64[~finite], ref64[~finite], equal_nan=True):
        return {"ok": False, "why": f"NaN/Inf differ ({int(np.isnan(ours64).sum())} NaN in ours, {int(np.isnan(ref64).sum())} in onnxruntime)"}
    if not finite.any():
        return {"ok": True, "max_err": 0.0, "tol": 0.0}
    scale = float(np.abs(ref64[finite]).max())
    tol = RTOL * scale + ATOL
    err = float(np.abs(ours64[finite] - ref64[finite]).max())
    out = {"ok": err <= tol, "max_err": err, "tol": tol}
    if not out["ok"]:
        out["why"] = f"max |ours - ref| {err:.3g} > tol {tol:.3g} (max |ref| {scale:.3g})"
    return out


def run_case(spec: dict) -> dict:
    """Worker side: build, run and compare one case; never raises (outcomes are data)."""
    from .cases import make_case

    case = make_case(spec["seed"], spec["index"], tuple(spec["families"]) if spec.get("families") else None)
    result = {"family": case.family, "description": case.description, "builds": []}
    try:
        reference = _ort_run(case)
    except Exception as err:
        return {**result, "outcome": "invalid", "error": describe(err)}
    from .. import onnx_model

    try:
        onnx_model.check_supported(case.model, case.name)
        onnx_model.resolve_input_specs(case.model, None)
    except AutoGLMError as err:
        return {**result, "outcome": "refused", "error": describe(err)}

    plan = [("cpu", level, True) for level in spec["opt_levels"]]
    if spec.get("isa", True):
        top = max(spec["opt_levels"])
        plan += [(target, top, host_runs(target)) for target in ISA_TARGETS]
    for target, level, execute in plan:
        build = {"target": target, "opt": level, "ran": execute}
        try:
            build.update(_build_and_check(case, reference, target, level, execute))
        except UnsupportedModelError as err:
            build.update(outcome="refused", error=describe(err))
        except OutOfMemoryError as err:  # the machine, not the compiler: no verdict, rerun later
            build.update(outcome="no_memory", error=describe(err))
        except Exception as err:  # AutoGLMError after the support check included: a failure
            build.update(outcome="internal_error", error=describe(err))
        result["builds"].append(build)
    result["outcome"] = min((b["outcome"] for b in result["builds"]), key=SEVERITY.index, default="match")
    return result


def _ort_run(case) -> list[np.ndarray]:
    from ..measure.candidates import ort_session

    return ort_session(case.model.SerializeToString(), threads=1, log_severity=4).run(None, case.inputs)


def _build_and_check(case, reference, target: str, level: int, execute: bool) -> dict:
    from ..pipeline import compile_model
    from ..runtime.session import Session

    done = compile_model(case.model, target, level)
    build, executable, manifest = done.build, done.executable, done.manifest
    if not execute:
        return {"outcome": "match", "kernels": len(build.kernels)}
    outputs = Session(executable, manifest).run(case.inputs)
    worst = {"outcome": "match", "max_err": 0.0}
    for (name, ours), ref in zip(outputs.items(), reference):
        verdict = compare(ours, ref)
        if not verdict["ok"]:
            return {"outcome": "mismatch", "output": name, "why": verdict["why"]}
        worst["max_err"] = max(worst["max_err"], verdict.get("max_err", 0.0))
    return worst


def case_outcome(result: dict) -> str:
    return "crash" if "crash" in result else result["outcome"]


def save_case(seed: int, index: int, families, out_dir: Path) -> Path:
    """Write the case's model and inputs to ``out_dir`` (rebuilt in this process: generation is cheap)."""
    from .cases import make_case

    case = make_case(seed, index, families)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{case.name}.onnx"
    path.write_bytes(case.model.SerializeToString())
    np.savez(out_dir / f"{case.name}-inputs.npz", **case.inputs)
    return path


def run_campaign(count: int, seed: int = 0, start: int = 0, opt_levels=(0, 1, 2, 3), isa: bool = True, families=None,
                 out_dir: str | Path | None = None, timeout_per_case: float = 300.0, progress=None, indices=None) -> dict:
    """Run cases ``start .. start+count-1`` (or exactly ``indices``) of campaign ``seed``; returns the summary.

    ``opt_levels``: the host builds of every case, or a function of the case index
    giving them (the fast subset in the tests rotates O0-O2 beside O3 to halve its time).
    """
    from .cases import make_case

    families = tuple(families) if families else None
    indices = list(indices) if indices is not None else list(range(start, start + count))
    levels_for = opt_levels if callable(opt_levels) else (lambda _index: opt_levels)  # callable: levels per case index
    specs = [{"id": i, "seed": seed, "index": i, "opt_levels": sorted(levels_for(i)), "isa": isa, "families": list(families or ())} for i in indices]
    out_dir = Path(out_dir) if out_dir else None
    began = time.monotonic()
    done = []

    saved: dict[int, str] = {}

    def report(spec, result):
        done.append(spec["id"])
        if out_dir is not None and case_outcome(result) in FAILURES:  # saved as found: a stopped campaign keeps them
            saved[spec["index"]] = str(save_case(seed, spec["index"], families, out_dir))
        if progress is None:
            return
        outcome = case_outcome(result)
        line = f"[{len(done)}/{len(specs)} {time.monotonic() - began:6.0f}s] s{seed} i{spec['index']} {result.get('family', '?')}: {outcome}"
        if outcome in FAILURES or outcome == "invalid":
            line += f"  {result.get('description') or make_case(seed, spec['index'], families).description}"
            detail = result.get("crash") or result.get("error") or "; ".join(
                f"{b['target']} O{b['opt']}: {b.get('why') or b.get('error')}" for b in result.get("builds", []) if b["outcome"] in FAILURES)
            line += f"  -- {detail}"
        print(line, file=progress, flush=True)

    from .isolation import run_isolated

    results = run_isolated(specs, "tvm_autoglm.testing.difftest:run_case", timeout_per_case, on_result=report)
    counts: dict[str, Counter] = defaultdict(Counter)
    failures = []
    for spec in specs:
        result = results[spec["id"]]
        outcome = case_outcome(result)
        family = result.get("family") or make_case(seed, spec["index"], families).family
        counts[family][outcome] += 1
        if outcome in FAILURES or outcome == "invalid":
            entry = {"seed": seed, "index": spec["index"], "family": family, "outcome": outcome,
                     "description": result.get("description") or make_case(seed, spec["index"], families).description}
            if "crash" in result:
                entry["error"] = result["crash"]
            elif "error" in result:
                entry["error"] = result["error"]
            else:
                entry["builds"] = [b for b in result["builds"] if b["outcome"] != "match"]
            if spec["index"] in saved:
                entry["model"] = saved[spec["index"]]
            failures.append(entry)
    totals = Counter()
    for per_family in counts.values():
        totals.update(per_family)
    return {
        "seed": seed, "cases": len(specs), "opt_levels": sorted({lv for spec in specs for lv in spec["opt_levels"]}), "isa_targets": list(ISA_TARGETS) if isa else [],
        "isa_run": [t for t in ISA_TARGETS if isa and host_runs(t)], "rtol": RTOL, "atol": ATOL,
        "totals": dict(totals), "by_family": {k: dict(v) for k, v in sorted(counts.items())},
        "failures": failures, "unchecked": [spec["index"] for spec in specs if case_outcome(results[spec["id"]]) == "no_memory"],
        "seconds": round(time.monotonic() - began, 1),
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .cases import FAMILIES

    parser = argparse.ArgumentParser(description="Differential testing of the compiler against onnxruntime on random small graphs.")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case index (reproduce one case: --start I --count 1)")
    parser.add_argument("--opt-levels", default="0,1,2,3")
    parser.add_argument("--no-isa", action="store_true", help="skip the cpu-x86-avx2 / cpu-x86-avx512 builds")
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="only these families (repeatable)")
    parser.add_argument("--out", default="difftest-out", help="where failing models are saved")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--describe", action="store_true", help="print the cases' one-line descriptions and exit")
    args = parser.parse_args(argv)
    levels = tuple(int(v) for v in args.opt_levels.split(","))
    if args.describe:
        from .cases import make_case

        for index in range(args.start, args.start + args.count):
            case = make_case(args.seed, index, tuple(args.family) if args.family else None)
            print(f"s{args.seed} i{index} {case.family}: {case.description}")
        return 0
    summary = run_campaign(args.count, args.seed, args.start, levels, not args.no_isa, args.family, args.out, args.timeout, progress=sys.stderr)
    print(json.dumps(summary, indent=2))
    if summary["unchecked"]:
        print(f"difftest: {len(summary['unchecked'])} case(s) unchecked for lack of free memory; rerun them: "
              f"{' '.join(map(str, summary['unchecked'][:20]))}{' ...' if len(summary['unchecked']) > 20 else ''}", file=sys.stderr)
    return 1 if any(summary["totals"].get(k) for k in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
