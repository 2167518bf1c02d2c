"""The database layer: torn-line repair, foreign-version lines, loading after repair, best-only export."""

from __future__ import annotations

import base64
import json
import struct
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from tvm_autoglm.tuning import database as dbmod


def _lines(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_torn_last_line_is_skipped_with_a_warning(db_copy):
    records = db_copy / dbmod.RECORDS
    before = len(_lines(records))
    assert before >= 8
    with open(records, "a") as fh:  # what SIGKILL mid-append leaves behind
        fh.write('[0, [["Sch')
    with pytest.warns(dbmod.TornRecordsWarning, match="skipped 1 unreadable"):
        db = dbmod.open_db(db_copy, create=False)
    assert len(db.get_all_tuning_records()) == before
    # Repaired on disk, atomically: a second open is silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error", dbmod.TornRecordsWarning)
        dbmod.open_db(db_copy, create=False)
    assert len(_lines(records)) == before


def test_torn_line_followed_by_later_appends(db_copy):
    """A killed run, then a resumed one appending after the torn bytes (no newline)."""
    records = db_copy / dbmod.RECORDS
    good = _lines(records)
    records.write_text("\n".join(good[:-1]) + "\n" + good[-1][:17] + good[-1] + "\n")
    with pytest.warns(dbmod.TornRecordsWarning):
        n = len(dbmod.open_db(db_copy, create=False).get_all_tuning_records())
    assert n == len(good) - 1


def test_record_pointing_at_missing_workload_is_dropped(db_copy):
    records = db_copy / dbmod.RECORDS
    good = _lines(records)
    rec = json.loads(good[0])
    rec[0] = 99
    records.write_text("\n".join(good + [json.dumps(rec)]) + "\n")
    with pytest.warns(dbmod.TornRecordsWarning):
        assert dbmod.repair(db_copy) == 1
    assert len(_lines(records)) == len(good)


def test_export_best_keeps_one_record_per_workload(tuned, tmp_path):
    result, db = tuned
    out = tmp_path / "shipped"
    n = dbmod.export_best(db, out)
    workloads = _lines(out / dbmod.WORKLOADS)
    records = [json.loads(line) for line in _lines(out / dbmod.RECORDS)]
    assert n == len(records) == len(workloads) == len(result.tasks)
    assert sorted(r[0] for r in records) == list(range(len(workloads)))
    src = dbmod.open_db(db, create=False)
    dst = dbmod.open_db(out, create=False)
    for rec in dst.get_all_tuning_records():
        best = dbmod.best_seconds(src, rec.workload.mod)
        mean = sum(float(s) for s in rec.run_secs) / len(rec.run_secs)
        assert mean == pytest.approx(best)


def _as_older_tvm_workload(line: str) -> str:
    """The same workload line as a TVM from before the tir -> tirx / s_tir split writes it.

    TVM 0.27 stores a workload as [hash, base64(8-byte little-endian length + JSON graph)];
    the graph names each node's IR type, and older releases named them tir.PrimFunc,
    tir.Block, ... which this TVM cannot resolve.
    """
    shash, b64 = json.loads(line)
    raw = base64.b64decode(b64)
    (length,) = struct.unpack("<Q", raw[:8])
    graph = raw[8:].decode("utf-8")
    assert length == len(raw) - 8 and '"tirx.PrimFunc"' in graph  # the format this test rewrites
    graph = graph.replace('"tirx.', '"tir.').replace('"s_tir.SBlock', '"tir.Block').encode("utf-8")
    return json.dumps([shash, base64.b64encode(struct.pack("<Q", len(graph)) + graph).decode("ascii")])


def test_lines_from_another_tvm_version_are_skipped_and_the_rest_applies(db_copy, tiny_model):
    import tvm_autoglm

    wpath, rpath = db_copy / dbmod.WORKLOADS, db_copy / dbmod.RECORDS
    workloads, records = _lines(wpath), _lines(rpath)
    assert len(records) >= 8
    # A trace as a TVM from before the s_tir rename wrote it: the instruction was GetBlock.
    assert '"GetSBlock"' in records[0]
    records[0] = records[0].replace('"GetSBlock"', '"GetBlock"')
    # A workload in the older IR type names, with one record of its own.
    workloads.append(_as_older_tvm_workload(workloads[0]))
    old = json.loads(records[1])
    old[0] = len(workloads) - 1
    records.append(json.dumps(old))
    wpath.write_text("\n".join(workloads) + "\n")
    rpath.write_text("\n".join(records) + "\n")
    good = [json.loads(r) for r in records[1:-1]]

    with pytest.warns(dbmod.ForeignRecordsWarning,
                      match=r"skipped 2 record\(s\) and 1 workload\(s\) written by another TVM version") as caught:
        db = dbmod.open_db(db_copy, create=False)
    assert len(caught) == 1
    assert len(db.get_all_tuning_records()) == len(good)
    assert len(_lines(wpath)) == len(workloads) - 1 and len(_lines(rpath)) == len(good)

    # Checked once: a second open is silent; a foreign line appended later is still caught.
    with warnings.catch_warnings():
        warnings.simplefilter("error", dbmod.TornRecordsWarning)
        dbmod.open_db(db_copy, create=False)
    with open(rpath, "a") as fh:
        fh.write(records[0] + "\n")
    with pytest.warns(dbmod.ForeignRecordsWarning, match=r"skipped 1 record\(s\) written by another TVM version"):
        assert dbmod.repair(db_copy) == 1

    # The remaining records still schedule the model, and it still computes the right thing.
    model = tvm_autoglm.compile(tiny_model, tuning_db=str(db_copy), use_shipped_schedules=False)
    # A record the tuning run's in-model check vetoed (noise can do that to a 16-trial run) is
    # withheld on purpose, not lost: it counts as handled.
    tuning = model.manifest["tuning"]
    assert tuning["records_applied"] + tuning.get("vetoed", 0) == len({r[0] for r in good}) >= 1, tuning
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    want = ort.InferenceSession(tiny_model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.run(x=x)["y"], want, rtol=1e-4, atol=1e-5)
