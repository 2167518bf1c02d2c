"""The on-disk MetaSchedule JSON database: where it lives, repair, merging, best-only export.

MetaSchedule's JSONDatabase appends one line per measured record, so a run
killed mid-write can leave a torn last line that makes the whole database fail
to load, and so does one line written by another TVM version. Every open goes
through :func:`repair` first, which drops unparsable lines, records pointing at
a missing workload, and lines this TVM cannot deserialize, warns with a count,
and rewrites the files atomically, so an interrupted run costs at most the
record that was being written and an upgrade costs only the foreign lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


class TornRecordsWarning(UserWarning):
    """Lines of a tuning database were unreadable (an interrupted write) and were skipped."""


class ForeignRecordsWarning(TornRecordsWarning):
    """Lines of a tuning database were written by another TVM version and were skipped."""


def default_dir(target_name: str) -> Path:
    """Per-user database per target; shared across models, since records match by workload."""
    root = os.environ.get("AUTOGLM_TUNING_CACHE")
    if root:
        return Path(root) / target_name
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tvm_autoglm" / "tuning" / target_name


def _read_lines(path: Path) -> tuple[list[str], list, int]:
    """(raw lines kept, parsed values, number of bad lines)."""
    if not path.is_file():
        return [], [], 0
    kept, parsed, bad = [], [], 0
    with open(path, "rb") as fh:
        data = fh.read()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
            value = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad += 1
            continue
        kept.append(text)
        parsed.append(value)
    return kept, parsed, bad


def _write_atomic(path: Path, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; a database is shareable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def repair(work_dir: Path) -> int:
    """Drops torn, dangling and foreign lines; returns how many were dropped (warns when > 0).

    MetaSchedule's loader fails on the first line it cannot turn into an object,
    so a single record written by another TVM version (a renamed instruction kind
    in a trace, a renamed IR type in a workload) would cost the whole database.
    Each line is therefore also deserialized with this TVM; lines already checked
    by an earlier open (same TVM, same leading lines) are not checked again.
    """
    work_dir = Path(work_dir)
    wpath, rpath = work_dir / WORKLOADS, work_dir / RECORDS
    wlines, wvals, wbad = _read_lines(wpath)
    rlines, rvals, rbad = _read_lines(rpath)
    # A workload line is [hash, module-json]; a record line is [workload index, record-json].
    wshape = [isinstance(v, list) and len(v) == 2 for v in wvals]
    rshape = [isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and 0 <= v[0] < len(wvals) and wshape[v[0]]
              for v in rvals]
    checked = _load_checked(work_dir, wlines, rlines)
    wforeign, rforeign = _foreign(wvals, wshape, rvals, rshape, checked)
    good_w = [i for i, ok in enumerate(wshape) if ok and i not in wforeign]
    remap = {old: new for new, old in enumerate(good_w)}
    new_wlines = [wlines[i] for i in good_w]
    new_rlines = []
    for j, (line, v, ok) in enumerate(zip(rlines, rvals, rshape)):
        if not ok or v[0] not in remap or j in rforeign:
            continue
        if remap[v[0]] != v[0]:
            line = json.dumps([remap[v[0]], v[1]])
        new_rlines.append(line)
    # Records of a foreign workload count as foreign; other dropped records as torn or dangling.
    nforeign_r = sum(1 for j, (v, ok) in enumerate(zip(rvals, rshape)) if ok and (j in rforeign or v[0] in wforeign))
    torn = wbad + wshape.count(False) + rbad + (len(rlines) - len(new_rlines) - nforeign_r)
    foreign = len(wforeign) + nforeign_r
    rewrite_w = len(new_wlines) != len(wlines) or wbad or (wpath.is_file() and _needs_newline(wpath))
    rewrite_r = len(new_rlines) != len(rlines) or rbad or rewrite_w or (rpath.is_file() and _needs_newline(rpath))
    if rewrite_w:
        _write_atomic(wpath, new_wlines)
    if rewrite_r:
        _write_atomic(rpath, new_rlines)
    if rewrite_r or checked != (len(new_wlines), len(new_rlines)):
        _save_checked(work_dir, new_wlines, new_rlines)
    if foreign:
        from tvm import __version__ as tvm_version

        parts = [f"{nforeign_r} record(s)" + (f" and {len(wforeign)} workload(s)" if wforeign else "")
                 + f" written by another TVM version (this is {tvm_version})"]
        if torn:
            parts.append(f"{torn} unreadable line(s) (an interrupted write)")
        warnings.warn(f"tuning database {work_dir}: skipped {' and '.join(parts)}; the rest loads",
                      ForeignRecordsWarning, stacklevel=2)
    elif torn:
        warnings.warn(f"tuning database {work_dir}: skipped {torn} unreadable line(s) (an interrupted write); the rest loads",
                      TornRecordsWarning, stacklevel=2)
    return torn + foreign


CHECKED = ".checked.json"


def _prefix_digest(lines: list[str], n: int) -> str:
    return hashlib.sha256("\n".join(lines[:n]).encode("utf-8")).hexdigest()


def _load_checked(work_dir: Path, wlines: list[str], rlines: list[str]) -> tuple[int, int]:
    """How many leading (workload, record) lines an earlier open already deserialized with this TVM."""
    from tvm import __version__ as tvm_version

    try:
        mark = json.loads((work_dir / CHECKED).read_text(encoding="utf-8"))
        if mark["tvm"] != tvm_version:
            return 0, 0
        nw, wdig = mark["workloads"]
        nr, rdig = mark["records"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0
    if nw > len(wlines) or nr > len(rlines) or _prefix_digest(wlines, nw) != wdig or _prefix_digest(rlines, nr) != rdig:
        return 0, 0
    return nw, nr


def _save_checked(work_dir: Path, wlines: list[str], rlines: list[str]) -> None:
    from tvm import __version__ as tvm_version

    mark = {"tvm": tvm_version, "workloads": [len(wlines), _prefix_digest(wlines, len(wlines))],
            "records": [len(rlines), _prefix_digest(rlines, len(rlines))]}
    if not (wlines or rlines):
        return
    with contextlib.suppress(OSError):  # a read-only (shipped) database is simply checked again next time
        _write_atomic(work_dir / CHECKED, [json.dumps(mark)])


def _foreign(wvals, wshape, rvals, rshape, checked) -> tuple[set[int], set[int]]:
    """(indices of workloads, indices of records) that this TVM cannot deserialize."""
    from tvm.s_tir import meta_schedule as ms

    nw_checked, nr_checked = checked
    loaded: dict[int, object] = {}
    wforeign: set[int] = set()

    def workload(i):
        if i not in loaded and i not in wforeign:
            try:
                loaded[i] = ms.database.Workload.from_json(wvals[i])
            except Exception:  # noqa: BLE001 - any failure means this TVM cannot read it
                wforeign.add(i)
        return loaded.get(i)

    for i in range(nw_checked, len(wvals)):
        if wshape[i]:
            workload(i)
    rforeign: set[int] = set()
    for j in range(nr_checked, len(rvals)):
        v = rvals[j]
        if not rshape[j]:
            continue
        wl = workload(v[0])
        if wl is None:
            continue  # counted with its workload
        try:
            ms.database.TuningRecord.from_json(v[1], wl)
        except Exception:  # noqa: BLE001
            rforeign.add(j)
    return wforeign, rforeign


def _needs_newline(path: Path) -> bool:
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) != b"\n"


def open_db(work_dir: Path, create: bool = True):
    """Repairs, then opens a JSONDatabase (creating the folder and files when asked)."""
    from tvm.s_tir import meta_schedule as ms

    work_dir = Path(work_dir)
    if create:
        work_dir.mkdir(parents=True, exist_ok=True)
    repair(work_dir)
    return ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=create, module_equality="structural")


def count_records(work_dir: Path) -> int:
    _, vals, _ = _read_lines(Path(work_dir) / RECORDS)
    return len(vals)


def records_per_workload(database, mod) -> int:
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), 1 << 30))


def best_seconds(database, mod) -> float | None:
    """Mean run time of the best valid record for this workload, if any."""
    if not database.has_workload(mod):
        return None
    top = database.get_top_k(database.commit_workload(mod), 1)
    if not top or not top[0].run_secs:
        return None
    secs = [float(s) for s in top[0].run_secs]
    return sum(secs) / len(secs)


def workload_key(workload) -> int:
    import tvm_ffi

    return int(tvm_ffi.structural_hash(workload.mod))


def unique_workloads(database) -> list:
    """The distinct workload modules that have at least one record."""
    mods, seen = [], set()
    for rec in database.get_all_tuning_records():
        key = workload_key(rec.workload)
        if key not in seen:
            seen.add(key)
            mods.append(rec.workload.mod)
    return mods


def copy_best(src_database, dst_database, mods=None, k: int = 1) -> int:
    """Commits each workload's best ``k`` records from src into dst; returns how many.

    ``mods`` restricts the copy to those workloads (e.g. one model's tasks).
    """
    from tvm.s_tir import meta_schedule as ms

    if mods is None:
        mods = unique_workloads(src_database)
    n = 0
    for mod in mods:
        if not src_database.has_workload(mod):
            continue
        top = src_database.get_top_k(src_database.commit_workload(mod), k)
        if not top:
            continue
        workload = dst_database.commit_workload(mod)
        have = dst_database.get_top_k(workload, 1 << 30)
        have_traces = {str(r.trace) for r in have}
        for rec in top:
            if str(rec.trace) in have_traces:
                continue
            dst_database.commit_tuning_record(
                ms.database.TuningRecord(rec.trace, workload, rec.run_secs, rec.target, rec.args_info)
            )
            n += 1
    return n


def export_best(src_dir: Path, dst_dir: Path, mods=None) -> int:
    """Writes a small best-record-only database (one record per workload) to dst_dir atomically."""
    src = open_db(Path(src_dir), create=False)
    dst_dir = Path(dst_dir)
    dst_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dst_dir.name + ".", dir=str(dst_dir.parent)))
    try:
        from tvm.s_tir import meta_schedule as ms

        dst = ms.database.JSONDatabase(work_dir=str(tmp), allow_missing=True, module_equality="structural")
        n = copy_best(src, dst, mods, k=1)
        del dst
        # Drop workloads that got no record: they only bloat the shipped file.
        _prune_unused_workloads(tmp)
        dst_dir.mkdir(parents=True, exist_ok=True)
        for name in (WORKLOADS, RECORDS):
            os.replace(tmp / name, dst_dir / name)
    finally:
        for p in tmp.glob("*"):
            p.unlink()
        tmp.rmdir()
    return n


def _prune_unused_workloads(work_dir: Path) -> None:
    wlines, _, _ = _read_lines(work_dir / WORKLOADS)
    rlines, rvals, _ = _read_lines(work_dir / RECORDS)
    used = sorted({v[0] for v in rvals})
    remap = {old: new for new, old in enumerate(used)}
    _write_atomic(work_dir / WORKLOADS, [wlines[i] for i in used])
    _write_atomic(work_dir / RECORDS, [json.dumps([remap[v[0]], v[1]]) for v in rvals])


@contextlib.contextmanager
def exclusive(work_dir: Path, notify=None):
    """Hold an exclusive lock on the database folder for one tuning run.

    MetaSchedule appends records without locking; two tuners on one folder
    could interleave half lines. A second ``auto-glm tune`` on the same folder
    therefore waits here (and says so) until the first finishes. The lock is
    an ``flock`` on ``.lock``, released by the kernel even if the holder is killed.
    """
    import fcntl

    path = Path(work_dir) / ".lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if notify:
                notify(f"waiting for {holder} to finish tuning into {work_dir} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
