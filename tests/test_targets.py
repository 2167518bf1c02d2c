"""Target resolution: ``cpu`` is the build machine, unless $AUTOGLM_HOST_CPU says which CPU to
pretend it is (compile-only runs "as if" on another CPU, e.g. AVX-512 from an AVX2 box)."""

from __future__ import annotations

from helpers import assert_clean_error, cli

from tvm_autoglm.schedule_rules._common import vector_bits
from tvm_autoglm.targets import HOST_CPU_ENV, load_target


def test_cpu_is_the_detected_host_without_the_override(monkeypatch):
    from tvm.target import codegen

    monkeypatch.delenv(HOST_CPU_ENV, raising=False)
    assert load_target("cpu").tvm_config["mcpu"] == str(codegen.llvm_get_system_cpu())


def test_host_cpu_override_changes_what_cpu_resolves_to(monkeypatch):
    monkeypatch.setenv(HOST_CPU_ENV, "znver4")
    spec = load_target("cpu")
    assert spec.tvm_config["mcpu"] == "znver4"
    assert vector_bits(spec.tvm_target()) == 512
    monkeypatch.setenv(HOST_CPU_ENV, "znver3")
    assert vector_bits(load_target("cpu").tvm_target()) == 256
    # named targets other than the host ones keep their own mcpu
    assert load_target("cpu-x86-avx2").tvm_config["mcpu"] == "haswell"


def test_unknown_host_cpu_override_is_a_clean_error(workdir, mlp_onnx):
    result = cli("compile", "--model", mlp_onnx, "--output", workdir / "x.so", env={HOST_CPU_ENV: "pentium-9000"})
    assert_clean_error(result, HOST_CPU_ENV, "pentium-9000")
    assert result.returncode == 2
