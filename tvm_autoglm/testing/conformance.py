"""The ONNX project's own node conformance cases, compiled and run by us.

``onnx.backend.test.case.node`` ships, inside the onnx wheel, one or more test cases per
op with outputs computed by ONNX's reference implementation. This module turns the cases
of the ops inference models use into a test tier:

* out of scope, skipped with a reason: ops outside :data:`INFERENCE_OPS`, function
  expansions (``*_expanded*``: their primitive ops have their own cases), exotic dtypes
  (float8, int4, bfloat16, strings, ...), non-tensor inputs/outputs (sequences, optionals);
* parameter inputs (axes, pads, shapes, k, scales; :data:`PARAM_INPUTS`) become
  initializers, the way exports carry them, so the case tests the op and not our
  handling of dynamic shapes;
* each case compiles with :func:`tvm_autoglm.compile` at the chosen opt level, runs, and is
  compared with the case's expected outputs: the case's own rtol/atol where it sets them,
  else :data:`DEFAULT_TOLERANCE` by dtype (exact for ints and bools; NaN must match NaN);
* outcome: ``pass``; ``refused`` (``UnsupportedModelError`` or ``InputError`` from the
  support check (ops, per-op rules, static non-empty input shapes): an
  acceptable, up-front, one-line refusal); ``wrong`` (ran, mismatched: shape, dtype or
  values); ``error`` (anything failing after the support check accepted the case, a crash
  or a hang included).

Cases run in child processes (``--jobs`` of them) so a segfault is an outcome, not the end
of the run. ``python -m tvm_autoglm.testing.conformance --help``; exit status 1 when any
case is wrong or an error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UnsupportedModelError, describe

#: The ops inference exports use (CNNs, transformers, LLMs, detection heads, quantized models).
INFERENCE_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization Cast CastLike
    Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh CumSum DepthToSpace
    DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand Flatten Floor Gather
    GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GroupNormalization
    HardSigmoid HardSwish Hardmax Identity InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax LpNormalization LRN MatMul MatMulInteger Max MaxPool Mean MeanVarianceNormalization
    Min Mish Mod Mul Neg NonZero Not OneHot Or PRelu Pad Pow QLinearConv QLinearMatMul QuantizeLinear Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize RMSNormalization RotaryEmbedding Round ScatterElements ScatterND Selu Shape
    Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Swish
    Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Where Xor
    """.split()
)

#: Input positions that exports carry as constants (shapes, axes, pads, k, scales, bounds).
PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3), "Resize": (1, 2, 3),
    "TopK": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "OneHot": (1, 2), "CumSum": (1,), "Clip": (1, 2), "Trilu": (1,), "Dropout": (1, 2),
    **{op: (1,) for op in ("ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
                           "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp")},
}

#: (rtol, atol) by output dtype when the case keeps onnx's defaults.
DEFAULT_TOLERANCE = {"float32": (1e-3, 1e-5), "float64": (1e-3, 1e-5), "float16": (1e-3, 1e-3)}
_ONNX_DEFAULT_TOLERANCE = (1e-3, 1e-7)  # TestCase's field defaults: "not set by the case"
_EXOTIC = re.compile(r"float8|float4|int4|uint4|int2|bfloat16|string|complex")


@dataclass
class Case:
    """One conformance case with a data set: a model file and an .npz of inputs and expected outputs."""

    name: str
    op: str
    index: int  # data-set number within the onnx case
    skip: str | None = None
    model_path: str | None = None
    data_path: str | None = None
    rtol: float | None = None
    atol: float | None = None
    outcome: str | None = None
    detail: str = ""

    @property
    def id(self) -> str:
        return self.name if self.index == 0 else f"{self.name}#{self.index}"


# ---------------------------------------------------------------- collecting


def _module_key(name: str) -> str:
    return name.rstrip("_").replace("_", "").removesuffix("op")


def _collect(ops: set[str] | None):
    """onnx's TestCases: only the modules of ``ops`` when they can be found by name (fast), else all."""
    import onnx.backend.test.case.node as node_pkg

    if ops:
        modules = {_module_key(m.name): m.name for m in pkgutil.iter_modules(node_pkg.__path__)}
        wanted = {op.lower().replace("_", "") for op in ops}
        if wanted <= modules.keys():
            for key in sorted(wanted):
                importlib.import_module(f"{node_pkg.__name__}.{modules[key]}")
            return list(node_pkg._NodeTestCases)
    return node_pkg.collect_testcases()


def _case_op(model) -> str:
    ops = [n.op_type for n in model.graph.node]
    return ops[0] if len(ops) == 1 else "+".join(sorted(set(ops)))


def _skip_reason(tc, op: str) -> str | None:
    import onnx

    if "_expanded" in tc.name:
        return "function expansion (its primitive ops have their own cases)"
    if op not in INFERENCE_OPS:
        return f"op {op} is not in the inference set"
    for vi in list(tc.model.graph.input) + list(tc.model.graph.output):
        if not vi.type.HasField("tensor_type"):
            return f"non-tensor {'input' if vi in tc.model.graph.input else 'output'} '{vi.name}'"
        dtype = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()
        if _EXOTIC.search(dtype):
            return f"exotic dtype {dtype} ('{vi.name}')"
    for node in tc.model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and _EXOTIC.search(onnx.TensorProto.DataType.Name(attr.t.data_type).lower()):
                return f"exotic dtype in attribute {attr.name}"
            if attr.name in ("to", "saturate") and attr.type == onnx.AttributeProto.INT and attr.name == "to":
                if _EXOTIC.search(onnx.TensorProto.DataType.Name(attr.i).lower()):
                    return f"exotic dtype {onnx.TensorProto.DataType.Name(attr.i).lower()} (attribute to)"
    return None


def freeze_parameters(model, inputs: dict[str, np.ndarray]):
    """A copy of ``model`` whose parameter inputs (:data:`PARAM_INPUTS`) are initializers; the remaining inputs."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    frozen = set()
    for node in graph.node:
        for pos in PARAM_INPUTS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] in inputs:
                frozen.add(node.input[pos])
    for name in sorted(frozen):
        graph.initializer.append(numpy_helper.from_array(np.asarray(inputs[name]), name))
    keep = [vi for vi in graph.input if vi.name not in frozen]
    del graph.input[:]
    graph.input.extend(keep)
    return model, {k: v for k, v in inputs.items() if k not in frozen}


def collect_cases(workdir: Path, ops: set[str] | None = None) -> list[Case]:
    """Every node case (and data set) of onnx, as files under ``workdir``; out-of-scope ones carry ``skip``."""
    import warnings

    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        testcases = _collect(ops)
    cases: list[Case] = []
    seen = set()
    for tc in testcases:
        if tc.kind != "node" or tc.model is None or tc.name in seen:
            continue
        seen.add(tc.name)
        op = _case_op(tc.model)
        if ops and op not in ops:
            continue
        skip = _skip_reason(tc, op)
        given = (tc.rtol, tc.atol) != _ONNX_DEFAULT_TOLERANCE
        for index, (raw_inputs, raw_outputs) in enumerate(tc.data_sets or []):
            case = Case(tc.name, op, index, skip=skip, rtol=tc.rtol if given else None, atol=tc.atol if given else None)
            cases.append(case)
            if skip:
                continue
            names = [vi.name for vi in tc.model.graph.input]
            if len(raw_inputs) != len(names) or len(raw_outputs) != len(tc.model.graph.output):
                case.skip = "data set does not match the graph's inputs/outputs"
                continue
            inputs = {name: np.asarray(value) for name, value in zip(names, raw_inputs)}
            if any(v.dtype == object for v in inputs.values()) or any(np.asarray(v).dtype == object for v in raw_outputs):
                case.skip = "object (string) data"
                continue
            model, inputs = freeze_parameters(tc.model, inputs)
            base = workdir / case.id.replace("#", "_")
            case.model_path = f"{base}.onnx"
            case.data_path = f"{base}.npz"
            onnx.save(model, case.model_path)
            arrays = {f"in:{k}": v for k, v in inputs.items()}
            arrays.update({f"out:{i}": np.asarray(v) for i, v in enumerate(raw_outputs)})
            np.savez(case.data_path, **arrays)
    return cases


def sample_cases(cases: list[Case], count: int, seed: int) -> list[Case]:
    """``count`` runnable cases spread over ops: round-robin over ops, each op's cases in seeded order."""
    rng = random.Random(seed)
    by_op: dict[str, list[Case]] = {}
    for case in cases:
        if not case.skip:
            by_op.setdefault(case.op, []).append(case)
    for group in by_op.values():
        rng.shuffle(group)
    order = sorted(by_op)
    rng.shuffle(order)
    picked: list[Case] = []
    while len(picked) < count and any(by_op.values()):
        for op in order:
            if by_op[op] and len(picked) < count:
                picked.append(by_op[op].pop())
    return picked


# ---------------------------------------------------------------- running one case (child process)


def tolerance(case_rtol, case_atol, dtype: np.dtype) -> tuple[float, float] | None:
    """(rtol, atol) for comparing outputs of ``dtype``; None means exact."""
    if dtype.kind not in "fc":
        return None
    if case_rtol is not None:
        return case_rtol, case_atol
    return DEFAULT_TOLERANCE.get(dtype.name, (1e-3, 1e-5))


def compare(name: str, got: np.ndarray, want: np.ndarray, rtol, atol) -> str | None:
    """None when ``got`` matches ``want``; else a one-line description of the first difference."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"output {name}: shape {list(got.shape)}, expected {list(want.shape)}"
    if got.dtype != want.dtype:
        return f"output {name}: dtype {got.dtype}, expected {want.dtype}"
    tol = tolerance(rtol, atol, want.dtype)
    if tol is None:
        bad = got != want
    else:
        g, w = got.astype("float64"), want.astype("float64")
        close = np.isclose(g, w, rtol=tol[0], atol=tol[1], equal_nan=True)
        bad = ~close
    if not np.any(bad):
        return None
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    rule = "exact" if tol is None else f"rtol={tol[0]:g} atol={tol[1]:g}"
    return f"output {name}: {int(bad.sum())}/{bad.size} elements differ ({rule}); at {list(where)} got {got[where]!r}, expected {want[where]!r}"


def run_case(model_path: str, data_path: str, opt_level: int, target: str, rtol=None, atol=None) -> tuple[str, str]:
    """(outcome, detail) for one case file pair."""
    import onnx

    from .. import compile as autoglm_compile

    model = onnx.load(model_path)
    data = np.load(data_path)
    inputs = {k[3:]: data[k] for k in data.files if k.startswith("in:")}
    expected = [data[f"out:{i}"] for i in range(len(model.graph.output))]
    try:
        compiled = autoglm_compile(model, target=target, opt_level=opt_level)
    except (UnsupportedModelError, InputError) as err:  # the support check (ops, rules, input shapes)
        return "refused", err.one_line()
    except Exception as err:  # noqa: BLE001 - every other failure is an outcome to report
        return "error", describe(err)
    try:
        got = compiled.run(inputs)
    except Exception as err:  # noqa: BLE001
        return "error", "run: " + describe(err)
    problems = []
    for vi, want in zip(model.graph.output, expected):
        if vi.name not in got:
            problems.append(f"output {vi.name} missing")
            continue
        problem = compare(vi.name, got[vi.name], want, rtol, atol)
        if problem:
            problems.append(problem)
    return ("wrong", "; ".join(problems)) if problems else ("pass", "")


def run_isolated_case(case: dict) -> list:
    """Child side (``testing.isolation``): ``[outcome, detail]`` of one case; a harness failure is an error, not fatal."""
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    try:
        return list(run_case(case["model_path"], case["data_path"], case["opt_level"], case["target"], case["rtol"], case["atol"]))
    except Exception as err:  # noqa: BLE001 - bad case files are still reported
        return ["error", "harness: " + describe(err)]


# ---------------------------------------------------------------- running many (parent)


def _run_queue(queue: list[Case], opt_level: int, target: str, timeout: float, workdir: Path, report) -> None:
    """Run ``queue`` in a child process (``isolation.run_isolated``: a crash or hang becomes that case's error)."""
    from .isolation import run_isolated

    by_id = {case.id: case for case in queue}
    jobs = [{"id": c.id, "model_path": c.model_path, "data_path": c.data_path, "rtol": c.rtol, "atol": c.atol,
             "opt_level": opt_level, "target": target} for c in queue]

    def on_result(job: dict, result) -> None:
        if isinstance(result, dict):  # {"crash": "CRASH (exit N)" / "HANG (> T s)"}
            report(by_id[job["id"]], "error", result["crash"].lower())
        else:
            report(by_id[job["id"]], *result)

    workdir.mkdir(parents=True, exist_ok=True)
    run_isolated(jobs, "tvm_autoglm.testing.conformance:run_isolated_case", timeout, workdir, on_result=on_result)


def run_cases(cases: list[Case], opt_level: int = 3, target: str = "cpu", jobs: int = 1, timeout: float = 180.0,
              workdir: Path | None = None, progress=None) -> list[Case]:
    """Run the runnable ``cases`` over ``jobs`` child processes; fills each case's outcome and detail."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="autoglm-conformance-"))
    runnable = [c for c in cases if not c.skip]
    lock = threading.Lock()
    done = Counter()

    def report(case: Case, outcome: str, detail: str) -> None:
        with lock:
            case.outcome, case.detail = outcome, detail
            done[outcome] += 1
            if progress:
                progress(f"[{sum(done.values())}/{len(runnable)}] {outcome:7} {case.id}" + (f": {detail}" if detail else ""))

    queues = [runnable[slot::jobs] for slot in range(max(1, jobs))]
    threads = [threading.Thread(target=_run_queue, args=(q, opt_level, target, timeout, workdir / f"job{i}", report)) for i, q in enumerate(queues) if q]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for case in cases:
        if case.skip:
            case.outcome, case.detail = "skipped", case.skip
    return cases


def summarize(cases: list[Case], opt_level: int, target: str) -> dict:
    counts = Counter(c.outcome for c in cases)
    per_op: dict[str, Counter] = {}
    for c in cases:
        per_op.setdefault(c.op, Counter())[c.outcome] += 1
    return {
        "opt_level": opt_level,
        "target": target,
        "cases": len(cases),
        "counts": {k: counts.get(k, 0) for k in ("pass", "refused", "wrong", "error", "skipped")},
        "per_op": {op: dict(sorted(c.items())) for op, c in sorted(per_op.items()) if set(c) != {"skipped"}},
        "results": [{"case": c.id, "op": c.op, "outcome": c.outcome, "detail": c.detail} for c in cases if c.outcome != "skipped"],
        "skipped": dict(Counter(c.detail.split(" (")[0] if c.detail.startswith("function") else c.detail.split("'")[0].strip() for c in cases if c.outcome == "skipped").most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run onnx's node conformance cases through tvm_autoglm.compile.")
    parser.add_argument("--opt-level", type=int, default=3)
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--ops", nargs="*", help="only these op types (e.g. LayerNormalization Attention)")
    parser.add_argument("--cases", nargs="*", help="only these case names (e.g. test_attention_3d)")
    parser.add_argument("--sample", type=int, help="a seeded sample of N runnable cases spread over ops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="child processes running cases in parallel")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--json", help="write the summary (counts, per op, every result) here")
    parser.add_argument("--list", action="store_true", help="list the cases and skip reasons; run nothing")
    args = parser.parse_args(argv)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="autoglm-conformance-"))
    start = time.time()
    cases = collect_cases(workdir, set(args.ops) if args.ops else None)
    if args.cases:
        cases = [c for c in cases if c.name in set(args.cases)]
    if args.sample:
        cases = sample_cases(cases, args.sample, args.seed)
    progress(f"{len(cases)} cases ({sum(1 for c in cases if not c.skip)} to run), collected in {time.time() - start:.0f} s")
    if args.list:
        for case in cases:
            print(f"{case.id}\t{case.op}\t{case.skip or 'run'}")
        return 0
    run_cases(cases, args.opt_level, args.target, args.jobs, args.timeout, workdir, progress)
    summary = summarize(cases, args.opt_level, args.target)
    summary["seconds"] = round(time.time() - start, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["counts"]))
    return 1 if summary["counts"]["wrong"] or summary["counts"]["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
