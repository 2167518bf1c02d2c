"""The database layer: torn-line repair, loading after repair, best-only export."""

from __future__ import annotations

import json
import warnings

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
