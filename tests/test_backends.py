"""Targets as backends: one interface, chosen by ``backends.for_target``, and no core module
outside ``tvm_autoglm/backends/`` that tests a target's kind or device to dispatch."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from tvm_autoglm import backends
from tvm_autoglm.backends.base import Backend
from tvm_autoglm.errors import TargetError
from tvm_autoglm.targets import load_target

PACKAGE = Path(backends.__file__).resolve().parent.parent

# The interface, written out: a hook added to Backend must be added here (and so be thought about).
METHOD_HOOKS = ("pass_names", "make_pass", "build_notes", "applies_tuning_records", "shipped_schedules_key", "is_offloaded",
                "schedule_defaults", "codegen_context", "export_options", "tune_elsewhere")
FLAG_HOOKS = {"tuner": (str, type(None)), "runs_on_build_host": bool, "measure_number": int, "flush_cpu_cache": bool, "records_baselines": bool,
              "checks_in_model": bool, "packs_int8": bool, "fast_fp16": bool, "checks_bf16_codegen": bool,
              "builds_generators": bool}


def test_interface_lists_every_hook():
    public = {name for name in dir(Backend) if not name.startswith("_")} - {"name"}
    assert public == set(METHOD_HOOKS) | set(FLAG_HOOKS)


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_each_backend_provides_every_hook(name):
    backend = backends.BACKENDS[name]
    assert backend.name == name and isinstance(backend, Backend)
    assert not inspect.isabstract(type(backend))
    for hook in METHOD_HOOKS:
        assert callable(getattr(backend, hook)), hook
    for flag, kind in FLAG_HOOKS.items():
        assert type(getattr(backend, flag)) in (kind if isinstance(kind, tuple) else (kind,)), flag
    for level in range(4):
        assert isinstance(backend.pass_names(level), list)


@pytest.mark.parametrize("target,backend", [("cpu", "cpu"), ("cpu-x86-avx512", "cpu"), ("gpu-ampere", "cuda"),
                                            ("gpu-hopper", "cuda"), ("npu-sim", "npu")])
def test_for_target_picks_the_files_backend(target, backend):
    assert backends.for_target(load_target(target)).name == backend


def test_a_target_name_alone_does_not_make_an_npu():
    """Dispatch is the file's "backend" field, not a name prefix (it was ``name.startswith("npu")``)."""
    cpu = load_target("cpu")
    assert backends.for_target(dataclasses.replace(cpu, name="npu-lookalike")).name == "cpu"
    npu = load_target("npu-sim")
    assert npu.extra["backend"] == "npu" and npu.to_json()["kind"] == "npu"


def test_unknown_backend_is_refused():
    spec = dataclasses.replace(load_target("cpu"), extra={"backend": "tpu"})
    with pytest.raises(TargetError, match="no backend 'tpu'"):
        backends.for_target(spec)


def test_manifest_backend_defaults_to_cpu_for_old_manifests():
    assert backends.for_manifest({"target": {"name": "x", "device": "cpu"}}).name == "cpu"
    assert backends.for_manifest({"target": {"kind": "cuda", "device": "cuda"}}).name == "cuda"


def test_cpu_and_cuda_backends_differ_where_the_old_branches_did():
    cpu, cuda, npu = (backends.BACKENDS[n] for n in ("cpu", "cuda", "npu"))
    assert not cpu.applies_tuning_records(0) and cuda.applies_tuning_records(0) and npu.applies_tuning_records(1)
    assert (cpu.measure_number, cuda.measure_number) == (1, 20)
    assert cpu.records_baselines and cuda.records_baselines and not npu.records_baselines
    assert cpu.runs_on_build_host and npu.runs_on_build_host and not cuda.runs_on_build_host
    assert cpu.packs_int8 and not npu.packs_int8 and not cuda.packs_int8
    from tvm_autoglm.npu.ms_tune import tune_for_driver

    assert npu.tune_elsewhere() is tune_for_driver and cpu.tune_elsewhere() is None and cuda.tune_elsewhere() is None


# Comparisons of a target's kind/device with a backend name, and name-prefix dispatch.
_DISPATCH = re.compile(
    r"""(\.kind|\.device|\[["'](?:kind|device)["']\]|\.get\(["'](?:kind|device)["'][^)]*\)|getattr\([^)]*["']kind["'][^)]*\))"""
    r"""\s*(?:==|!=|not\s+in|in)\s*\(?\s*["'](?:cpu|cuda|npu)"""
    r"""|\.name\.startswith\(["']npu|name_hint\.startswith\(["']npu_"""
)


# Not core compile code: the backends and the packages that implement one backend each, and
# the deployment side, which opens an artifact's device (cpu or cuda) and must not import the compiler.
EXEMPT_DIRS = {"backends", "npu", "gpu", "runtime"}
EXEMPT_FILES = {"cli/cmd_profile.py"}  # the FMA peak measures the CPU: asks where the artifact runs, not how it was built


def _dispatch_lines(root: Path, exempt: bool = True) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if exempt and (rel.parts[0] in EXEMPT_DIRS or rel.as_posix() in EXEMPT_FILES):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _DISPATCH.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_no_core_module_dispatches_on_target_kind():
    assert _dispatch_lines(PACKAGE) == []


def test_the_dispatch_check_finds_the_old_branches(tmp_path):
    """The pattern is not vacuous: it flags each form the old core modules used."""
    (tmp_path / "old.py").write_text("\n".join([
        'if spec.kind == "npu":', 'if spec.device == "cuda":', 'elif spec.kind in ("cpu", "cuda"):',
        'if manifest.get("target", {}).get("kind") != "npu":', 'if getattr(spec, "kind", None) != "cpu":',
        'if self.name.startswith("npu"):', 'return gv.name_hint.startswith("npu_")', 'ok = dtype.kind == "f"',
    ]))
    assert len(_dispatch_lines(tmp_path)) == 7
