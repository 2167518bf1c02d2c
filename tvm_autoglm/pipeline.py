"""The compile pipeline, end to end, in the order it runs (``compile_model``).

    support check -> ONNX clean-up (fold shape subgraphs with static shapes)
    -> tvm.relax.frontend.onnx.from_onnx -> our passes (the backend's pass plan, passes/plan.py)
    -> fusion (relax "zero" pipeline: LegalizeOps, FoldConstant, FuseOps, FuseTIR)
    -> precision rewrites (--quantize) -> tuning database (MetaScheduleApplyDatabase)
    -> the backend's default schedules for the rest -> tvm.compile -> manifest
    (-> artifact.export: export_library + manifest files)

What differs between targets is asked of the target's backend (``tvm_autoglm.backends``);
this module never tests a target's kind.

It is spelled out here rather than hidden in ``tvm.compile`` because on a CPU
target ``tvm.compile`` only lowers: it neither fuses nor schedules.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import tvm
from tvm import relax

from . import onnx_model
from .backends import for_target
from .errors import AutoGLMError, CompileError, InternalError, stage_errors
from .ir_utils import kernel_names, op_histogram
from .llvm_codegen import compile_module
from .fusion import fuse_module, quiet_take_warning
from .pass_report import PassReport
from .progress import StageLog
from .targets import TargetSpec, load_target


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
    #: dynamic builds: {symbol: (min, max)} of the symbolic input dims (manifest "symbolic_dims")
    symbolic_dims: dict = field(default_factory=dict)
    #: --specialize: [{symbol: size}] of the static variants of main (manifest "specializations")
    specializations: list = field(default_factory=list)

    @property
    def kernels(self) -> list[str]:
        return kernel_names(self.mod)


def _source_digest(proto: onnx.ModelProto, path: Path | None) -> str:
    if path is not None:
        from .runtime.manifest import sha256_file

        return sha256_file(path)
    return hashlib.sha256(proto.SerializeToString()).hexdigest()


def import_onnx(proto: onnx.ModelProto, shapes: dict[str, list[int]], source: str) -> tvm.IRModule:
    import tvm.relax.frontend.onnx  # noqa: F401  (not imported by tvm.relax)

    from . import frontend
    from .frontend.if_branches import outline_if_branches, scoped_if_branches

    from .dynamic_build import frontend_shape_dict

    dtypes = {spec.name: spec.dtype for spec in onnx_model.graph_inputs(proto)}
    # The support check has passed: a frontend failure now is ours to fix (or to add to the check).
    from .onnx_external import frontend_reads_external

    with stage_errors(f"ONNX import into Relax of {source}"), frontend.extended_convert_map(), scoped_if_branches(), frontend_reads_external():
        mod = relax.frontend.onnx.from_onnx(proto, shape_dict=frontend_shape_dict(shapes), dtype_dict=dtypes)
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


def _output_specs(mod: tvm.IRModule, proto: onnx.ModelProto, ranges: dict | None = None) -> list[dict]:
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
            if not ranges:
                raise CompileError(f"output '{name}' has a symbolic shape {leaf.shape}; fix the input shapes") from None
            from .dynamic_build import output_shape

            shape = output_shape(name, leaf, ranges)
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
    tuning_db: str | None = None,
    post_import=None,
    dynamic_dims: dict | None = None,
    specialize: dict | None = None,
) -> RelaxBuild:
    """ONNX -> fused Relax module (no schedules yet); ``freeze_inputs`` binds inputs to constants first.

    ``dynamic_dims`` (``{onnx dim name: (min, max)}``) keeps those dims symbolic, as ranges in
    ``input_shapes`` do; ``specialize`` (``{symbol: [sizes]}``) adds static variants of main (``specialize``).

    ``tuning_db`` matters here only where a backend's graph passes read records (npu-sim tiles).
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
        from .shape_ranges import resolve

        inputs, symbolic_dims = resolve(proto, input_shapes, dynamic_dims)  # static builds: resolve_input_specs
    shapes = {spec_.name: list(spec_.shape) for spec_ in inputs}
    with log.stage("onnx clean-up (fold shape subgraphs)"):
        with stage_errors(f"ONNX clean-up of {source}"):
            cleaned = _clean(proto, shapes)
        onnx_model.check_supported(cleaned, source)
    from .dynamic_build import dynamic_import_errors

    with log.stage("import to Relax"), spec.tvm_target(), dynamic_import_errors(source, symbolic_dims):  # converters may read the target
        mod = import_onnx(cleaned, shapes, source)
    if symbolic_dims:
        from .dynamic_build import annotate_bounds, check_symbols

        check_symbols(mod, symbolic_dims)
        mod = annotate_bounds(mod, symbolic_dims)
    from .specialize import add_variants, variants

    specialized = variants(specialize, symbolic_dims)
    mod = add_variants(mod, specialized)  # static copies of main: every pass sees them as static
    outputs = _output_specs(mod, cleaned, symbolic_dims)
    if post_import is not None:
        with log.stage("post-import rewrite"), spec.tvm_target():
            mod = post_import(mod, cleaned)

    reports: list[PassReport] = []
    applied: list[str] = []
    backend = for_target(spec)
    mod = _run_passes(mod, spec, backend, opt_level, disabled_passes, print_ir_after, log, reports, applied, tuning_db)

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
    notes.extend(backend.build_notes(mod))
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
        symbolic_dims=symbolic_dims,
        specializations=specialized,
    )


def _run_passes(mod, spec, backend, opt_level, disabled_passes, print_ir_after, log, reports, applied, tuning_db):
    from .passes import passes_for
    from .passes.tally import recording

    for pass_spec in passes_for(opt_level, backend.name, tuple(disabled_passes)):
        before = op_histogram(mod)
        start = time.perf_counter()
        with log.stage(f"pass {pass_spec.name}"):
            with stage_errors(f"pass '{pass_spec.name}'", hint=f"skip the pass with --disable-pass {pass_spec.name}"):
                with spec.tvm_target(), quiet_take_warning(), recording() as tally:
                    mod = backend.make_pass(pass_spec, spec, tuning_db)(mod)
        after = op_histogram(mod)
        rewrites = tally.rewrites if tally.counted else _calls_changed(before, after)
        reports.append(PassReport(pass_spec.name, time.perf_counter() - start, before, after, rewrites, tally.declines, not tally.counted))
        applied.append(pass_spec.name)
        if pass_spec.name in print_ir_after:
            print(f"# IR after {pass_spec.name}\n{mod.script()}")
    return mod


def _calls_changed(before: dict, after: dict) -> int:
    """Calls gained or lost between two op histograms: the rough count for a pass that does not count itself."""
    return sum(abs(after.get(op, 0) - before.get(op, 0)) for op in set(before) | set(after))


@dataclass
class Scheduled:
    mod: tvm.IRModule
    tuning: dict
    #: --weights external: the constants lifted out of ``mod`` into parameters (external_weights.py)
    weights: object | None = None


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
        with stage_errors(f"code generation for target {build.target.name}"), for_target(build.target).codegen_context(build.target):
            return compile_module(scheduled.mod, build.target.tvm_target(), on_fallback=lambda why: log.note(
                f"LLVM rejected its own SLP-vectorized code ({why}); rebuilt with -vectorize-slp=false"))


@dataclass
class Compiled:
    """What ``compile_model`` made: the Relax build, and unless stopped early the schedules,
    the executable and the manifest (None past ``until``)."""

    build: RelaxBuild
    scheduled: Scheduled | None = None
    executable: object | None = None
    manifest: dict | None = None


#: where ``compile_model`` may stop: after the (quantized) fused Relax build, or after codegen
UNTIL = ("relax", "codegen")


def compile_model(
    model,
    target: str | TargetSpec = "cpu",
    opt_level: int = 3,
    input_shapes: dict[str, list[int]] | None = None,
    tuning_db: str | None = None,
    *,
    disabled_passes: tuple[str, ...] = (),
    print_ir_after: tuple[str, ...] = (),
    use_shipped_schedules: bool = True,
    honor_vetoes: bool = True,
    quantize: str = "none",
    accuracy_budget: float | None = None,
    calibration=None,
    freeze_inputs: dict | None = None,
    until: str = "codegen",
    post_import=None,
    weights: str = "embedded",
    log: StageLog | None = None,
    dynamic_dims: dict | None = None,
    specialize: dict | None = None,
) -> Compiled:
    """The one compile flow: every front end (API, CLI, tuning, tests' harnesses) calls this.

    ``model`` is an ONNX path or ModelProto, or a ``RelaxBuild`` already made by this
    function (then only scheduling and codegen run again, e.g. with another database).
    ``until="relax"`` stops after the fused (and quantized) Relax build: what tuning needs.
    ``post_import`` rewrites the imported module before our passes (the generator's KV cache).
    ``dynamic_dims={"seq": (1, 512)}`` keeps the ONNX dims named ``seq`` symbolic over that range (as a
    range in ``input_shapes`` does); ``specialize={"seq": [128]}`` adds static variants for those sizes.
    ``weights="external"`` lifts the constants out of the library into parameters just before
    codegen (``external_weights.py``); ``artifact.export`` writes them beside the ``.so``.
    """
    if until not in UNTIL:
        raise ValueError(f"until must be one of {UNTIL} (got {until!r})")
    from .external_weights import check_mode

    check_mode(weights, target if not isinstance(model, RelaxBuild) else model.target)
    if isinstance(model, RelaxBuild):
        front = {"disabled_passes": disabled_passes, "print_ir_after": print_ir_after, "freeze_inputs": freeze_inputs,
                 "quantize": quantize != "none", "input_shapes": input_shapes, "post_import": post_import,
                 "dynamic_dims": dynamic_dims, "specialize": specialize}
        if any(front.values()):
            raise ValueError(f"a RelaxBuild is already imported, optimized and quantized; "
                             f"{', '.join(k for k, v in front.items() if v)} cannot apply to it")
        build = model
    else:
        from .quantize import apply_quantization, passes_off_for

        spec = target if isinstance(target, TargetSpec) else load_target(target)
        # a precision mode turns off the passes whose rewrites it would undo or cannot see through
        disabled = tuple(disabled_passes)
        disabled += tuple(p for p in passes_off_for(quantize) if p not in disabled)
        build = build_relax(model, spec, opt_level, input_shapes, disabled, tuple(print_ir_after), log=log,
                            freeze_inputs=freeze_inputs, tuning_db=tuning_db, post_import=post_import,
                            dynamic_dims=dynamic_dims, specialize=specialize)
        if quantize and quantize != "none":
            build = apply_quantization(build, quantize, budget=accuracy_budget, calibration=calibration, log=log)
    if until == "relax":
        return Compiled(build)
    from .artifact import make_manifest

    scheduled = schedule(build, tuning_db, use_shipped_schedules, log=log, honor_vetoes=honor_vetoes)
    if weights == "external":
        from .external_weights import lift_weights

        with (log or StageLog(enabled=False)).stage("lift weights out of the library"), stage_errors("lifting weights"):
            lifted, table = lift_weights(scheduled.mod)
        scheduled = Scheduled(lifted, scheduled.tuning, table)
    executable = build_executable(scheduled, build, log=log)
    return Compiled(build, scheduled, executable, make_manifest(build, scheduled))
