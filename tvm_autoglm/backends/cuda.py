"""The CUDA backend: dlight GPU rules, a binding guard, CUDA graphs, nvcc-built binaries in the .so."""

from __future__ import annotations

import contextlib

from .base import Backend


def uses_cuda_graph(spec) -> bool:
    """A CUDA target file's ``"cuda_graph"`` switch (default on).

    At batch 1 a transformer layer is a dozen kernels of a few microseconds each, so
    launching them one by one from the VM costs as much as running them. TVM's
    ``RewriteCUDAGraph`` captures the static part of ``main`` into a CUDA graph on the first
    call and replays it after, one launch per call.
    """
    return bool(spec.extra.get("cuda_graph", True))


class CudaBackend(Backend):
    name = "cuda"
    runs_on_build_host = False  # a GPU build can be exported on a machine without the GPU
    measure_number = 20
    flush_cpu_cache = False
    checks_in_model = False

    def applies_tuning_records(self, opt_level):
        return True  # every CUDA kernel needs a schedule, even at O0

    def schedule_defaults(self, mod, spec, opt_level, tuning):
        """dlight rules at every opt level: an unscheduled CUDA kernel would silently become host code."""
        from ..gpu import apply_gpu_default_schedules

        return apply_gpu_default_schedules(mod, spec.tvm_target())

    @contextlib.contextmanager
    def codegen_context(self, spec):
        """The target in scope and the CUDA-graph switch.

        The target scope matters on a build machine with a CUDA driver: there TVM compiles the
        kernels during ``tvm.compile`` (``tvm_callback_cuda_compile``), and our callback reads the
        arch from the target in scope; with none it took the local GPU's, so a gpu-ampere build
        on an H200 carried sm_90a code only.
        """
        import tvm

        current = tvm.transform.PassContext.current()
        config = dict(current.config.items())
        if uses_cuda_graph(spec):
            config["relax.backend.use_cuda_graph"] = True
        context = tvm.transform.PassContext(opt_level=current.opt_level, config=config,
                                            required_pass=list(current.required_pass), disabled_pass=list(current.disabled_pass))
        with spec.tvm_target(), context:
            yield

    def export_options(self, manifest):
        """Embed nvcc-built GPU binaries (SASS for the target arch), not CUDA source."""
        from ..gpu import cuda_export_options

        return cuda_export_options(manifest)
