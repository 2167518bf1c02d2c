"""Targets by name, from the declarative files in ``targets/*.json``.

A target file says what the user means ("cpu", "gpu-hopper"); this module turns
it into a ``tvm.target.Target`` built from a dict, since TVM 0.27 rejects the
old ``"llvm -mcpu=..."`` strings. ``"@host"`` values are filled in from the
build machine, so ``cpu`` means "this machine" and stays honest when CI runs on
a different CPU than the developer's.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import TargetError

HOST = "@host"

# Overrides the detected LLVM cpu of the build machine (e.g. ``znver4``), so a
# CI box can compile and inspect the code the ``cpu`` target would give on
# another CPU. Compile-only: code built for a CPU the machine lacks dies with
# "Illegal instruction" when it runs. Never set in normal runs.
HOST_CPU_ENV = "AUTOGLM_HOST_CPU"


def targets_dir() -> Path:
    """Where target files live: $AUTOGLM_TARGETS_DIR, the repo's targets/, or the packaged copy."""
    env = os.environ.get("AUTOGLM_TARGETS_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent / "targets"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parent / "_targets"


@dataclass(frozen=True)
class TargetSpec:
    """One named target: the file's content plus the resolved TVM target dict."""

    name: str
    device: str  # "cpu" or "cuda": where the code runs (an npu-sim build runs on the CPU)
    description: str
    tvm_config: dict
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """Which backend compiles for this target (``tvm_autoglm.backends``): the file's
        ``"backend"`` field, else its device ("cpu" or "cuda"). Only ``backends.for_target``
        dispatches on it; the manifest records it as ``target.kind``."""
        return str(self.extra.get("backend", self.device))

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.tvm_config)

    def to_json(self) -> dict:
        return {"name": self.name, "device": self.device, "kind": self.kind, "tvm": self.tvm_config, **self.extra}


def host_cpu() -> dict:
    """The build machine's LLVM cpu name (or $AUTOGLM_HOST_CPU) and usable core count."""
    return _host_cpu(os.environ.get(HOST_CPU_ENV, ""))


@lru_cache(maxsize=4)
def _host_cpu(override: str) -> dict:
    from tvm.target import codegen

    if override:
        triple = str(codegen.llvm_get_system_triple())
        if not codegen.llvm_is_valid_cpu(override, triple):
            raise TargetError(f"{HOST_CPU_ENV}={override!r} is not a CPU LLVM knows for {triple} (e.g. znver3, znver4, cascadelake)")
        mcpu = override
    else:
        mcpu = str(codegen.llvm_get_system_cpu())
    if mcpu in ("", "generic"):
        mcpu = "x86-64"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return {"mcpu": mcpu, "num-cores": cores}


def _resolve_host(config: dict) -> dict:
    config = copy.deepcopy(config)
    host = host_cpu()
    for key, value in list(config.items()):
        if value == HOST:
            if key not in host:
                raise TargetError(f"target field '{key}' cannot be '@host' (only mcpu and num-cores can)")
            config[key] = host[key]
        elif isinstance(value, dict):
            config[key] = _resolve_host(value)
    return config


def known_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.json"))


def load_target(name: str) -> TargetSpec:
    """Resolve a target name (or a path to a target JSON file) to a TargetSpec."""
    path = Path(name)
    if not (name.endswith(".json") and path.is_file()):
        path = targets_dir() / f"{name}.json"
    if not path.is_file():
        raise TargetError(f"unknown target '{name}'; known targets: {', '.join(known_targets())}")
    try:
        data = json.loads(path.read_text())
        tvm_config = _resolve_host(data["tvm"])
        extra = {k: v for k, v in data.items() if k not in ("name", "device", "description", "tvm")}
        return TargetSpec(
            name=data.get("name", path.stem),
            device=data.get("device", "cpu"),
            description=data.get("description", ""),
            tvm_config=tvm_config,
            extra=extra,
        )
    except (KeyError, json.JSONDecodeError) as err:
        raise TargetError(f"target file {path} is malformed: {err}") from None


def cpu_has_feature(spec: TargetSpec, feature: str) -> bool:
    """Whether ``spec`` is an LLVM CPU target whose mcpu has the LLVM CPU ``feature`` (e.g. ``avx512bf16``).

    Asked of the *target*, not the build machine: ``cpu`` resolves ``@host`` (or
    $AUTOGLM_HOST_CPU) to an mcpu first, and a pinned target (``cpu-x86-avx2``) answers
    for the CPU it names wherever it is compiled. False for non-LLVM (GPU) targets; whether a
    backend asks at all is its own business (``Backend.checks_bf16_codegen``, ``fast_fp16``).
    """
    if spec.tvm_config.get("kind") != "llvm":
        return False
    from tvm.target import codegen

    return bool(codegen.llvm_cpu_has_features([feature], spec.tvm_target()))


# x86 ISA families, most specific first: (family, LLVM CPU features it needs). Shipped schedules
# are keyed by family (schedules/<family>/<model>/), so one tuning run serves every CPU that
# runs the same instructions: a record is a loop transformation, and what decides whether it
# still compiles and wins is the vector ISA (register width, FMA, VNNI/BF16 dot products), not
# the exact CPU model.
X86_FAMILIES = (
    ("x86-avx512-vnni-bf16", ("avx512f", "avx512vnni", "avx512bf16")),
    ("x86-avx512", ("avx512f",)),
    ("x86-avx2", ("avx2", "fma")),
)


def isa_family(spec: TargetSpec) -> str | None:
    """The ISA family of an LLVM x86 target (``x86-avx2``, ``x86-avx512``, ``x86-avx512-vnni-bf16``), else None.

    Derived from the *target's* mcpu features (``cpu`` resolves ``@host`` or $AUTOGLM_HOST_CPU
    first), never from the build machine. None (no family: nothing shipped applies) for non-LLVM
    targets, non-x86 triples, and x86 CPUs without AVX2+FMA (``generic``, ``x86-64``).
    """
    if spec.tvm_config.get("kind") != "llvm":
        return None
    from tvm.target import codegen

    target = spec.tvm_target()
    triple = str(spec.tvm_config.get("mtriple") or codegen.llvm_get_system_triple())
    if not triple.startswith(("x86_64", "i386", "i686")):
        return None
    for family, features in X86_FAMILIES:
        if bool(codegen.llvm_cpu_has_features(list(features), target)):
            return family
    return None
