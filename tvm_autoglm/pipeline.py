"""The compile pipeline, end to end, in the order it runs.

    support check -> ONNX clean-up (fold shape subgraphs with static shapes)
    -> tvm.relax.frontend.onnx.from_onnx -> our passes (registry, by opt level)
    -> fusion (relax "zero" pipeline: LegalizeOps, FoldConstant, FuseOps, FuseTIR)
    -> tuning database (MetaScheduleApplyDatabase) -> default schedules for the rest
    -> tvm.compile -> export_library + manifest

It is spelled out here rather than hidden in ``tvm.compile`` because on a CPU
target ``tvm.compile`` only lowers: it neither fuses nor schedules.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import tvm
from tvm import relax

from . import onnx_model
from .errors import AutoGLMError, CompileError, InternalError, stage_errors
from .progress import StageLog
from .targets import TargetSpec, load_target


@dataclass
class PassReport:
    """What one pass did: time taken and the op histogram of ``main`` before and after."""

    name: str
    seconds: float
    ops_before: dict
    ops_after: dict

    def to_json(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 4), "ops_before": self.ops_before, "ops_after": self.ops_after}


@dataclass
class RelaxBuild:
    """The fused Relax module plus everything the manifest needs to say about it."""

    mod: tvm.IRModule
    target: TargetSpec
    opt_level: int
    inputs: list
    outputs: list
    passes: list[str]
    pass_reports: list[PassReport]
    source_sha256: str
    source_path: str | None
    onnx_model: onnx.ModelProto | None = None
    notes: list[str] = field(default_factory=list)
    #: the module after our passes, before fusion: what precision rewrites start from
    pre_fusion_mod: tvm.IRModule | None = None
    quantization: dict | None = None  # --quantize int8/auto: per-layer precisions and measured error (manifest "quantization")
    #: --freeze-input: inputs bound to constants before import (manifest "frozen_inputs")
    frozen_inputs: list = field(default_factory=list)

    @property
    def kernels(self) -> list[str]:
        return kernel_names(self.mod)


def kernel_names(mod: tvm.IRModule) -> list[str]:
    """Names of the TIR kernels in a module, sorted."""
    return sorted(gv.name_hint for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc))


def op_histogram(mod: tvm.IRModule) -> dict:
    """Counts of Relax ops and ``call_tir`` kernels called from the module's Relax functions."""
    counts: Counter = Counter()

    def visit(expr):
        if isinstance(expr, relax.Call):
            if isinstance(expr.op, tvm.ir.Op):
                if expr.op.name in ("relax.call_tir", "relax.call_tir_inplace") and isinstance(expr.args[0], relax.GlobalVar):
                    counts["call_tir"] += 1
                else:
                    counts[expr.op.name.removeprefix("relax.")] += 1
            elif isinstance(expr.op, relax.GlobalVar):
                counts[f"@{expr.op.name_hint}"] += 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return dict(sorted(counts.items()))


def _source_digest(proto: onnx.ModelProto, path: Path | None) -> str:
    if path is not None:
        from .runtime.manifest import sha256_file

        return sha256_file(path)
    return hashlib.sha256(proto.SerializeToString()).hexdigest()


def import_onnx(proto: onnx.ModelProto, shapes: dict[str, list[int]], source: str) -> tvm.IRModule:
    import tvm.relax.frontend.onnx  # noqa: F401  (not imported by tvm.relax)

    from . import frontend
    from .frontend.if_branches import outline_if_branches, scoped_if_branches

    dtypes = {spec.name: spec.dtype for spec in onnx_model.graph_inputs(proto)}
    # The support check has passed: a frontend failure now is ours to fix (or to add to the check).
    with stage_errors(f"ONNX import into Relax of {source}"), frontend.extended_convert_map(), scoped_if_branches():
        mod = relax.frontend.onnx.from_onnx(proto, shape_dict=shapes, dtype_dict=dtypes)
    if has_control_flow(mod):
        # The frontend builds a function with an If without any dataflow block, and memory
        # planning breaks on branches with several allocations (frontend/if_branches.py):
        # outline each branch into a function of its own, then wrap the straight-line code
        # in dataflow blocks, which FuseOps and our passes need.
        with stage_errors(f"ONNX import into Relax of {source} (If branches)"):
            mod = relax.transform.ConvertToDataflow(min_size=1)(outline_if_branches(mod))
    return mod


def has_control_flow(mod: tvm.IRModule) -> bool:
    """Whether any Relax function of ``mod`` holds an ``If`` (ONNX If that did not fold away)."""
    found = []

    def visit(expr):
        if isinstance(expr, relax.If):
            found.append(expr)

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return bool(found)


def _output_specs(mod: tvm.IRModule, proto: onnx.ModelProto) -> list[dict]:
    names = [spec.name for spec in onnx_model.graph_outputs(proto)]
    ret = mod["main"].ret_ty
    leaves = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    if len(leaves) != len(names):
        raise InternalError("ONNX import", f"the imported graph returns {len(leaves)} values but the ONNX graph has {len(names)} outputs")
    specs = []
    for name, leaf in zip(names, leaves):
        if not isinstance(leaf, relax.TensorType) or leaf.shape is None or not hasattr(leaf.shape, "values"):
            raise CompileError(f"output '{name}' has no static tensor shape after import ({leaf})")
        try:
            shape = [int(d) for d in leaf.shape.values]
        except TypeError:
            raise CompileError(f"output '{name}' has a symbolic shape {leaf.shape}; fix the input shapes") from None
        specs.append({"name": name, "shape": shape, "dtype": str(leaf.dtype)})
    return specs


def _clean(proto: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    from .onnx_cleanup import fold_static_shapes

    return fold_static_shapes(proto, shapes)


def build_relax(
    model,
    target: str | TargetSpec = "cpu",
    opt_level: int = 3,
    input_shapes: dict[str, list[int]] | None = None,
    disabled_passes: tuple[str, ...] = (),
    print_ir_after: tuple[str, ...] = (),
    log: StageLog | None = None,
    freeze_inputs: dict | None = None,
    post_import=None,
) -> RelaxBuild:
    """ONNX -> fused Relax module (no schedules yet); ``freeze_inputs`` binds inputs to constants first.

    ``post_import(mod, cleaned_proto) -> mod`` rewrites the freshly imported module before our
    passes run (the generator's KV-cache rewrite, ``generate/build.py``).
    """
    from .passes import get_pass

    log = log or StageLog(enabled=False)
    if opt_level not in (0, 1, 2, 3):
        raise AutoGLMError(f"--optimize-level must be 0, 1, 2 or 3 (got {opt_level})")
    spec = target if isinstance(target, TargetSpec) else load_target(target)
    for name in print_ir_after:
        get_pass(name)

    with log.stage("load model"):
        proto, path = onnx_model.load_model(model)
    source = str(path) if path else "model"
    from .resources import check_compile_memory, model_size

    check_compile_memory(model_size(proto, path), source)
    source_sha256 = _source_digest(proto, path)  # of the model as given, before any input is frozen
    frozen: list = []
    if freeze_inputs:
        from .freeze import freeze_inputs as bind_inputs

        with log.stage("freeze inputs"):
            proto, frozen = bind_inputs(proto, freeze_inputs)
    with log.stage("support check"):
        onnx_model.check_supported(proto, source, folded=False)
        inputs = onnx_model.resolve_input_specs(proto, input_shapes)
    shapes = {spec_.name: list(spec_.shape) for spec_ in inputs}
    with log.stage("onnx clean-up (fold shape subgraphs)"):
        with stage_errors(f"ONNX clean-up of {source}"):
            cleaned = _clean(proto, shapes)
        onnx_model.check_supported(cleaned, source)
    with log.stage("import to Relax"), spec.tvm_target():  # converters may read the target (e.g. vector width)
        mod = import_onnx(cleaned, shapes, source)
    outputs = _output_specs(mod, cleaned)
    if post_import is not None:
        with log.stage("post-import rewrite"), spec.tvm_target():
            mod = post_import(mod, cleaned)

    reports: list[PassReport] = []
    applied: list[str] = []
    with _target_scope(spec):
        mod = _run_passes(mod, spec, opt_level, disabled_passes, print_ir_after, log, reports, applied)

    notes: list[str] = []
    with log.stage("fusion" if opt_level >= 1 else "lowering (O0: no fusion)"):
        pre_fusion = mod
        before = op_histogram(mod)
        start = time.perf_counter()
        with stage_errors("fusion" if opt_level >= 1 else "lowering"):
            mod = fuse_module(mod, spec, opt_level)
        name = "fuse_ops" if opt_level >= 1 else "legalize_ops"
        reports.append(PassReport(name, time.perf_counter() - start, before, op_histogram(mod)))
        applied.append(name)
    if spec.kind == "npu":
        from .npu.partition import partition_notes

        notes.extend(partition_notes(mod))
    return RelaxBuild(
        mod=mod,
        target=spec,
        opt_level=opt_level,
        inputs=[s.to_json() for s in inputs],
        outputs=outputs,
        passes=applied,
        pass_reports=reports,
        source_sha256=source_sha256,
        source_path=source if path else None,
        onnx_model=cleaned,
        notes=notes,
        pre_fusion_mod=pre_fusion,
        frozen_inputs=frozen,
    )


def fuse_module(mod: tvm.IRModule, spec: TargetSpec, opt_level: int) -> tvm.IRModule:
    """O1+: TVM's "zero" pipeline (LegalizeOps, FoldConstant, FuseOps, FuseTIR); O0: LegalizeOps only."""
    with spec.tvm_target(), _quiet_take_warning():
        if opt_level >= 1:
            return relax.get_pipeline("zero")(mod)
        return relax.transform.LegalizeOps()(mod)


def _quiet_take_warning():
    """Legalizing a Gather (FoldConstant, FuseOps, passes that legalize) prints TVM's "Fast mode
    segfaults" warning once per take; the runtime range-checks index inputs instead (manifest
    ``index_ranges``), so drop that line and replay every other native line."""
    from .native_log import FAST_TAKE, quiet_native_stderr

    return quiet_native_stderr(drop=FAST_TAKE)


def _target_scope(spec: TargetSpec):
    """npu-sim passes read the machine description (cores, scratchpads) of this target file,
    unless the caller already chose a machine with ``npu.partition.machine_scope``."""
    if spec.kind == "npu":
        from .npu import partition
        from .npu.config import machine_from

        if partition._MACHINE.get() is None:
            return partition.machine_scope(machine_from(spec.extra))
    import contextlib

    return contextlib.nullcontext()


def _run_passes(mod, spec, opt_level, disabled_passes, print_ir_after, log, reports, applied):
    from .passes import passes_for

    for pass_spec in passes_for(opt_level, spec.kind, tuple(disabled_passes)):
        before = op_histogram(mod)
        start = time.perf_counter()
        with log.stage(f"pass {pass_spec.name}"):
            with stage_errors(f"pass '{pass_spec.name}'", hint=f"skip the pass with --disable-pass {pass_spec.name}"):
                with spec.tvm_target(), _quiet_take_warning():
                    mod = pass_spec.make()(mod)
        reports.append(PassReport(pass_spec.name, time.perf_counter() - start, before, op_histogram(mod)))
        applied.append(pass_spec.name)
        if pass_spec.name in print_ir_after:
            print(f"# IR after {pass_spec.name}\n{mod.script()}")
    return mod


@dataclass
class Scheduled:
    mod: tvm.IRModule
    tuning: dict


def schedule(build: RelaxBuild, tuning_db: str | None = None, use_shipped_schedules: bool = True, log: StageLog | None = None,
             honor_vetoes: bool = True) -> Scheduled:
    """Tuning records first, then our default rules for every kernel still unscheduled."""
    from .scheduling import schedule_module

    log = log or StageLog(enabled=False)
    with log.stage("schedule kernels"):
        with stage_errors("scheduling"):
            mod, tuning = schedule_module(build.mod, build.target, build.opt_level, tuning_db, use_shipped_schedules, honor_vetoes)
    return Scheduled(mod, tuning)


def build_executable(scheduled: Scheduled, build: RelaxBuild, log: StageLog | None = None):
    log = log or StageLog(enabled=False)
    with log.stage("codegen (tvm.compile)"):
        with stage_errors(f"code generation for target {build.target.name}"), _codegen_context(build.target):
            return tvm.compile(scheduled.mod, build.target.tvm_target())


def uses_cuda_graph(spec: TargetSpec) -> bool:
    """A CUDA target file's ``"cuda_graph"`` switch (default on).

    At batch 1 a transformer layer is a dozen kernels of a few microseconds each, so
    launching them one by one from the VM costs as much as running them. TVM's
    ``RewriteCUDAGraph`` captures the static part of ``main`` into a CUDA graph on the first
    call and replays it after, one launch per call.
    """
    return spec.kind == "cuda" and bool(spec.extra.get("cuda_graph", True))


@contextlib.contextmanager
def _codegen_context(spec: TargetSpec):
    """The context for ``tvm.compile``: on CUDA, the target in scope and the CUDA-graph switch.

    The target scope matters on a build machine with a CUDA driver: there TVM compiles the
    kernels during ``tvm.compile`` (``tvm_callback_cuda_compile``), and our callback reads the
    arch from the target in scope; with none it took the local GPU's, so a gpu-ampere build
    on an H200 carried sm_90a code only.
    """
    if spec.kind != "cuda":
        yield
        return
    current = tvm.transform.PassContext.current()
    config = dict(current.config.items())
    if uses_cuda_graph(spec):
        config["relax.backend.use_cuda_graph"] = True
    context = tvm.transform.PassContext(opt_level=current.opt_level, config=config,
                                        required_pass=list(current.required_pass), disabled_pass=list(current.disabled_pass))
    with spec.tvm_target(), context:
        yield
