"""``--quantize auto``: per-layer precision by measured sensitivity, under an accuracy budget.

Error measure. For one input sample and one float output, ``cos`` is the cosine
similarity between the fp32 output and the quantized output (both flattened).
The end-to-end error is ``1 - mean(cos)`` over every calibration sample and
every float output. ``--accuracy-budget B`` is the largest end-to-end error
allowed (default 0.01, i.e. mean cosine >= 0.99).

Precision ladder, cheapest first, per target (``ladder_for``): the rungs a
layer may take and, within them, the weight bytes a layer reads per inference
(1, 2, 4 per element) as the cost. On the CPU targets the ladder is int8 < fp32:
x86 without AVX-512 FP16 has no fp16 arithmetic, so an fp16 layer converts its
operands to fp32 in the kernel and runs *slower* than fp32 at the batch sizes
we compile for (MiniLM s128: auto with 6 fp16 layers measured 196 ms against
183 ms all-fp32), so "cheaper" there would mean fewer bytes but more time. (Our
CPU matmul kernels compute in fp32 even where the ISA has fp16 arithmetic.)
Targets that compute in fp16 (CUDA, the NPU's fp16 GEMM mode) keep int8 < fp16
< fp32. bf16 is a rung only on CPU targets whose mcpu has AVX512-BF16
(``avx512bf16``: Zen 4/5, Cooper Lake, Sapphire Rapids): int8 < bf16 < fp32.
Elsewhere the bf16 operands would be emulated, so bf16 is never offered there
(``--quantize bf16`` itself says what it does on such a CPU).

Search. One *probe* module (``int8.probe_module``) is compiled for the host CPU:
every quantizable matmul computes all three precisions and an ``int32[L]``
input picks one per layer, so any assignment is one run away instead of one
compile away. (In the probe int8 is simulated exactly in fp32, see
``int8.int8_matmul``; errors are measured on the host CPU for every target.)
1. reference: all fp32; then per layer i and precision p, only layer i at p:
   its error ``e[i][p]`` (its sensitivity).
2. greedy: start all fp32; repeatedly apply the move (layer i -> cheaper p)
   with the smallest added error per weight byte saved, while the *predicted*
   total (sum of per-layer errors) stays within ``HEADROOM * B``. Summing is
   sound to first order: ``1 - cos ~ |d|^2 / (2|y|^2)`` and independent
   rounding noise adds in squared norm.
3. verify: run the chosen assignment; while the *measured* error exceeds
   ``HEADROOM * B``, undo the most recent move. HEADROOM (0.8) leaves room
   for inputs the calibration set did not contain.

Calibration inputs: ``--calibration DATA.npz`` (one array per model input,
either the input's shape or with one extra leading sample axis), else
``CALIBRATION_SAMPLES`` inputs generated from the input specs
(``runtime.example_inputs``, seeds 0..n-1); the manifest says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from ..errors import AutoGLMError, CompileError, InputError, stage_errors
from ..fusion import fuse_module
from ..progress import StageLog
from ..scheduling import schedule_module
from ..targets import load_target
from . import int8
from .cpu_features import BF16_FEATURE

DEFAULT_BUDGET = 0.01
HEADROOM = 0.8
CALIBRATION_SAMPLES = 4
LADDER = ("int8", "fp16", "fp32")  # cheapest first, where the target computes in fp16
CPU_LADDER = ("int8", "fp32")
CPU_BF16_LADDER = ("int8", "bf16", "fp32")  # CPUs with AVX512-BF16


def ladder_for(spec) -> tuple[str, ...]:
    """The precisions ``auto`` may give a layer on ``spec``, cheapest first (see the module docstring)."""
    from ..backends import for_target

    if spec is not None and for_target(spec).fast_fp16:
        return LADDER
    from ..targets import cpu_has_feature

    return CPU_BF16_LADDER if cpu_has_feature(spec, BF16_FEATURE) else CPU_LADDER


def load_calibration(path, specs: list[dict]) -> list[dict[str, np.ndarray]]:
    """``.npz`` -> list of per-sample input dicts, checked against the input specs."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--calibration {path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:
        raise InputError(f"--calibration {path}: not a readable .npz ({type(err).__name__})") from err
    counts = set()
    arrays = {}
    for spec in specs:
        name, shape = spec["name"], tuple(spec["shape"])
        if name not in data.files:
            raise InputError(f"--calibration {path}: no array for input '{name}' (has: {', '.join(data.files) or 'none'})")
        arr = np.asarray(data[name]).astype(spec["dtype"])
        if arr.shape == shape:
            arr = arr[None]
        elif arr.shape[1:] != shape:
            raise InputError(f"--calibration {path}: input '{name}' has shape {list(arr.shape)}; expected {list(shape)} or [N, {', '.join(map(str, shape))}]")
        arrays[name] = arr
        counts.add(arr.shape[0])
    if len(counts) != 1:
        raise InputError(f"--calibration {path}: inputs have different sample counts {sorted(counts)}")
    return [{name: arr[i] for name, arr in arrays.items()} for i in range(counts.pop())]


def calibration_inputs(build, calibration=None, samples: int = CALIBRATION_SAMPLES) -> tuple[list[dict], str]:
    """(samples, where they came from) — a given .npz, a list of dicts, or generated from the input specs."""
    from ..runtime.inputs import example_inputs

    if calibration is None:
        from ..index_ranges import index_ranges

        ranges = index_ranges(build.onnx_model)  # token ids inside the embedding tables
        return [example_inputs(build.inputs, seed, index_ranges=ranges) for seed in range(samples)], f"generated from input specs (runtime.example_inputs, seeds 0..{samples - 1})"
    if isinstance(calibration, (list, tuple)):
        return list(calibration), f"{len(calibration)} samples given in process"
    return load_calibration(calibration, build.inputs), f"{calibration}"


class Probe:
    """The probe module compiled for the host CPU; ``error(plan)`` runs it on every calibration sample."""

    def __init__(self, build, samples: list[dict], bf16: bool = False):
        mod, self.sites = int8.probe_module(int8.unfused_module(build), bf16=bf16)
        host = load_target("cpu")
        mod = fuse_module(mod, host, 1)  # the pipeline's own fusion (and its native-noise filter)
        try:
            mod, _ = schedule_module(mod, host, 1, None, False)
        except Exception:  # unscheduled kernels are slower but give the same numbers
            pass
        self.vm = relax.VirtualMachine(tvm.compile(mod, host.tvm_target()), tvm.cpu())
        self.names = [spec["name"] for spec in build.inputs]
        self.samples = [[tvm.runtime.tensor(np.ascontiguousarray(s[name])) for name in self.names] for s in samples]
        self.reference = [self._run(args, ["fp32"] * len(self.sites)) for args in self.samples]

    def _run(self, args, plan: list[str]) -> list[np.ndarray]:
        flags = np.array([int8.FLAG[p] for p in plan] or [0], dtype=np.int32)
        out = self.vm["main"](*args, tvm.runtime.tensor(flags))
        leaves = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ in ("Array", "List") else [out]
        return [leaf.numpy() for leaf in leaves]

    def error(self, plan: list[str]) -> float:
        """``1 - mean cosine`` against all-fp32 over samples and float outputs."""
        sims = []
        for args, ref in zip(self.samples, self.reference):
            for a, b in zip(ref, self._run(args, plan)):
                if a.dtype.kind != "f":
                    continue
                sims.append(cosine(a, b))
        return float(1.0 - np.mean(sims)) if sims else 0.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def choose(sensitivity: list[dict], sizes: list[int], limit: float, ladder: tuple[str, ...] = LADDER) -> list[tuple[int, str]]:
    """Greedy moves (layer, precision) in the order taken; predicted total error stays <= ``limit``."""
    state = ["fp32"] * len(sizes)
    total = 0.0
    moves = []
    while True:
        best = None
        for i, current in enumerate(state):
            for p in ladder[: ladder.index(current)]:
                added = sensitivity[i][p] - sensitivity[i].get(current, 0.0)
                saved = sizes[i] * (int8.WEIGHT_BYTES[current] - int8.WEIGHT_BYTES[p])
                if total + added > limit:
                    continue
                key = (max(added, 0.0) / saved, -saved)
                if best is None or key < best[0]:
                    best = (key, i, p, added)
        if best is None:
            return moves
        _, i, p, added = best
        state[i] = p
        total += added
        moves.append((i, p))


def plan_from(moves: list[tuple[int, str]], count: int) -> list[str]:
    plan = ["fp32"] * count
    for i, p in moves:
        plan[i] = p
    return plan


def search(build, budget: float | None = None, calibration=None, log=None) -> tuple[list[str], dict]:
    """(plan, manifest record) for ``build`` under ``budget``."""
    log = log or StageLog(enabled=False)
    budget = DEFAULT_BUDGET if budget is None else float(budget)
    if not (0.0 <= budget < 1.0):
        raise AutoGLMError(f"--accuracy-budget {budget}: must be in [0, 1) (allowed 1 - mean cosine similarity, e.g. 0.01)")
    samples, source = calibration_inputs(build, calibration)
    ladder = ladder_for(build.target)
    with log.stage(f"quantize auto: probe ({len(samples)} calibration samples)"):
        with stage_errors("--quantize auto (building the sensitivity probe)"):
            probe = Probe(build, samples, bf16="bf16" in ladder)
    count = len(probe.sites)
    if count == 0:
        raise AutoGLMError("--quantize auto: the model has no matmul with a constant 2-D float32 weight to quantize", hint="use --quantize none or fp16")
    with log.stage(f"quantize auto: sensitivity of {count} layers ({' < '.join(ladder)})"):
        sensitivity = []
        for i in range(count):
            row = {"fp32": 0.0}
            for p in ladder[:-1]:
                plan = ["fp32"] * count
                plan[i] = p
                row[p] = probe.error(plan)
            sensitivity.append(row)
    sizes = [site["weight_shape"][0] * site["weight_shape"][1] for site in probe.sites]
    limit = budget * HEADROOM
    moves = choose(sensitivity, sizes, limit, ladder)
    with log.stage("quantize auto: verify"):
        measured = probe.error(plan_from(moves, count))
        undone = 0
        while moves and measured > limit:
            moves.pop()
            undone += 1
            measured = probe.error(plan_from(moves, count))
    plan = plan_from(moves, count)
    record = {
        "budget": budget,
        "error_definition": "1 - mean cosine similarity of float outputs vs fp32, over calibration samples",
        "headroom": HEADROOM,
        "measured_on": "host CPU probe (int8 simulated exactly in fp32)",
        "calibration": source,
        "calibration_samples": len(samples),
        "end_to_end_error": measured,
        "predicted_error": float(sum(sensitivity[i][p] for i, p in enumerate(plan))),
        "moves_undone": undone,
        "ladder": list(ladder),
        "sensitivity": [{"layer": f"matmul_{i}", "int8": row["int8"], "fp16": row.get("fp16"), "bf16": row.get("bf16")} for i, row in enumerate(sensitivity)],
    }
    return plan, record


def apply_auto(build, budget: float | None = None, calibration=None, log=None):
    plan, record = search(build, budget, calibration, log)
    out = int8.apply_plan(build, plan, record, "auto", log)
    layers = out.quantization["layers"]
    for row, sens in zip(layers, record["sensitivity"]):
        row["error_int8"] = sens["int8"]
        row["error_fp16"] = sens.get("fp16")  # None where fp16 is not on the target's ladder
        row["error_bf16"] = sens.get("bf16")  # None where the target has no AVX512-BF16
        row["error_chosen"] = sens.get(row["precision"], 0.0)
    note = (f"quantize auto: budget {record['budget']} (1 - mean cosine); measured end-to-end error {record['end_to_end_error']:.3g} "
            f"on {record['calibration_samples']} calibration samples ({record['calibration']})")
    out.notes.append(note)
    return out
