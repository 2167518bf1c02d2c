"""Shipped schedules are keyed by ISA family: records tuned on one CPU serve every CPU of its family.

``targets.isa_family`` names the family from the target's mcpu features (not the build
machine's); ``schedules/<family>/<model>/`` is where compile looks (``CpuBackend.shipped_schedules_key``).
A record measured on one mcpu applies under another mcpu of the family, because MetaSchedule
queries by workload only (pinned below, so a TVM upgrade that starts comparing targets is caught);
the in-model veto still holds, and another family does not pick the records up.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tvm_autoglm.backends import for_target
from tvm_autoglm.targets import isa_family, load_target
from tvm_autoglm.tuning import database as dbmod


def _with(target: str, **tvm_fields):
    spec = load_target(target)
    return dataclasses.replace(spec, tvm_config={**spec.tvm_config, **tvm_fields})


@pytest.mark.parametrize("mcpu,family", [
    ("haswell", "x86-avx2"), ("znver2", "x86-avx2"), ("znver3", "x86-avx2"), ("alderlake", "x86-avx2"),
    ("skylake-avx512", "x86-avx512"), ("cascadelake", "x86-avx512"),  # VNNI without BF16
    ("znver4", "x86-avx512-vnni-bf16"), ("znver5", "x86-avx512-vnni-bf16"), ("sapphirerapids", "x86-avx512-vnni-bf16"),
    ("generic", None), ("x86-64", None),  # no AVX2: no family, nothing shipped
])
def test_isa_family_of_known_mcpus(mcpu, family):
    assert isa_family(_with("cpu-x86-avx2", mcpu=mcpu)) == family


def test_host_cpu_override_decides_the_cpu_targets_family(monkeypatch):
    monkeypatch.setenv("AUTOGLM_HOST_CPU", "znver4")
    assert isa_family(load_target("cpu")) == "x86-avx512-vnni-bf16"
    monkeypatch.setenv("AUTOGLM_HOST_CPU", "haswell")
    assert isa_family(load_target("cpu")) == "x86-avx2"


def test_non_x86_targets_have_no_family():
    assert isa_family(_with("cpu-x86-avx2", mtriple="aarch64-linux-gnu", mcpu="neoverse-v1")) is None
    assert isa_family(load_target("gpu-hopper")) is None


def test_shipped_schedules_key_per_backend():
    """CPU targets share their family's folder; CUDA and npu-sim keep their own target's folder."""
    assert for_target(load_target("cpu-x86-avx2")).shipped_schedules_key(load_target("cpu-x86-avx2")) == "x86-avx2"
    assert for_target(load_target("cpu-x86-avx512")).shipped_schedules_key(load_target("cpu-x86-avx512")) == "x86-avx512"
    generic = _with("cpu-x86-avx2", mcpu="generic")
    assert for_target(generic).shipped_schedules_key(generic) is None
    for name in ("gpu-hopper", "npu-sim"):
        assert for_target(load_target(name)).shipped_schedules_key(load_target(name)) == name


def test_repo_ships_znver3_records_as_x86_avx2():
    """The resnet50 records tuned on Zen 3 are found for any AVX2 target, and say where they were tuned."""
    from tvm_autoglm.tuning.apply import repo_schedules_dir, shipped_databases

    folder = repo_schedules_dir() / "x86-avx2" / "resnet50-b1"
    assert folder in shipped_databases(load_target("cpu-x86-avx2"))  # mcpu haswell
    assert folder in shipped_databases(_with("cpu-x86-avx2", mcpu="alderlake"))
    assert not shipped_databases(load_target("cpu-x86-avx512"))  # nothing is shipped for AVX-512 families
    assert not shipped_databases(_with("cpu-x86-avx2", mcpu="generic"))
    info = json.loads((folder / "info.json").read_text())
    assert info["family"] == "x86-avx2" and "znver3" in info["tuned_on"] and info["command"]


def test_metaschedule_queries_records_by_workload_not_target(tuned):
    """What family keying relies on: a record measured under one mcpu is returned for another."""
    import tvm

    database = dbmod.open_db(tuned[1], create=False)
    records = database.get_all_tuning_records()
    assert records
    for mcpu in ("haswell", "alderlake", "cascadelake"):
        other = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 1})
        rec = records[0]
        assert str(rec.target) != str(other)
        assert database.query_tuning_record(rec.workload.mod, other, "main") is not None, mcpu


@pytest.fixture
def shipped_avx2(tuned, tmp_path, monkeypatch):
    """The tiny model's tuned records shipped as the x86-avx2 family (``AUTOGLM_SCHEDULES_DIR``), re-keyed to znver3
    so they were "tuned" on another mcpu than the haswell / alderlake targets below, whatever the host."""
    root = tmp_path / "schedules"
    folder = root / "x86-avx2" / "tiny-mlp"
    dbmod.export_best(tuned[1], folder)
    lines = (folder / dbmod.RECORDS).read_text().splitlines()
    rekeyed = []
    for line in lines:
        index, record = json.loads(line)
        record[2] = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2, "keys": ["cpu"]}  # [trace, run_secs, target, args]
        rekeyed.append(json.dumps([index, record]))
    (folder / dbmod.RECORDS).write_text("\n".join(rekeyed) + "\n")
    monkeypatch.setenv("AUTOGLM_SCHEDULES_DIR", str(root))
    assert all("znver3" in str(r.target) for r in dbmod.open_db(folder, create=False).get_all_tuning_records())
    return folder


def _target_file(tmp_path, name, mcpu):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "device": "cpu", "tvm": {"kind": "llvm", "mcpu": mcpu, "num-cores": 1}}))
    return str(path)


@pytest.mark.parametrize("mcpu", ["haswell", "alderlake"])
def test_family_records_apply_on_another_cpu_of_the_family(shipped_avx2, tiny_model, tmp_path, mcpu):
    """Records keyed x86-avx2 and tagged znver3 schedule a haswell / alderlake build; outputs match onnxruntime."""
    import tvm_autoglm
    from helpers import ort_run

    model = tvm_autoglm.compile(tiny_model, target=_target_file(tmp_path, f"test-{mcpu}", mcpu))
    tuning = model.manifest["tuning"]
    assert tuning["shipped_schedules"] == [str(shipped_avx2)]
    assert tuning["records_applied"] == tuning["tuned_kernels"] == 2
    x = np.random.default_rng(3).standard_normal((32, 64)).astype(np.float32)
    ours = model.run({"x": x})
    ref = ort_run(tiny_model, {"x": x})
    np.testing.assert_allclose(ours["y"], ref["y"], rtol=1e-4, atol=1e-5)  # fp32, two 64-deep dot products


def test_family_records_still_honor_the_in_model_veto(shipped_avx2, tiny_model, tmp_path):
    import tvm

    from tvm_autoglm.pipeline import compile_model, schedule
    from tvm_autoglm.runtime.manifest import write_json_atomic
    from tvm_autoglm.tuning.vetoes import VETO_FILE, workload_key

    build = compile_model(tiny_model, _target_file(tmp_path, "test-haswell", "haswell"), 3, until="relax").build
    kernels = sorted(((str(gv), f) for gv, f in build.mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)), key=lambda kv: kv[0])
    assert schedule(build).tuning["tuned_kernels"] == 2
    name, func = kernels[0]
    write_json_atomic(shipped_avx2 / VETO_FILE, {"format": 1, "vetoed": {str(workload_key(func)): {"task": name}}})
    tuning = schedule(build).tuning
    assert tuning["vetoed"] == 1 and tuning["tuned_kernels"] == 1


def test_another_family_does_not_pick_up_avx2_records(shipped_avx2, tiny_model):
    """cpu-x86-avx512 (cascadelake) is compiled only (it may not run here) and gets no avx2 record."""
    from tvm_autoglm.pipeline import compile_model, schedule

    build = compile_model(tiny_model, "cpu-x86-avx512", 3, until="relax").build
    tuning = schedule(build).tuning
    assert tuning["shipped_schedules"] == [] and tuning["tuned_kernels"] == 0
    assert tuning["default_scheduled_kernels"] == 2
