"""CUDA targets (gpu-ampere sm_80, gpu-hopper sm_90a): schedules, binding guard, GPU binaries.

``apply_gpu_default_schedules`` is what ``scheduling.schedule_module`` calls
for CUDA targets; ``cuda_export_options`` is what ``artifact.export`` uses so
the ``.so`` carries SASS for the target arch instead of CUDA source.
"""

from .binary import Image, embedded_cuda_modules
from .export import cuda_export_options
from .nvcc import find_nvcc, install_compile_callback
from .schedules import check_thread_bound, default_gpu_schedule, default_rules, is_thread_bound, unbound_kernels
from .schedules import apply_gpu_default_schedules as _apply


def apply_gpu_default_schedules(mod, target, rules=None):
    """dlight rules on a copy of ``mod`` (inside ``with target``), then refuse unbound kernels."""
    install_compile_callback()
    return _apply(mod, target, rules)


__all__ = [
    "Image",
    "apply_gpu_default_schedules",
    "check_thread_bound",
    "cuda_export_options",
    "default_gpu_schedule",
    "default_rules",
    "embedded_cuda_modules",
    "find_nvcc",
    "install_compile_callback",
    "is_thread_bound",
    "unbound_kernels",
]
