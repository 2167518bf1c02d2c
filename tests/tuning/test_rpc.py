"""Distributed measurement: a tracker and two RPC servers on 127.0.0.1.

The builds stay local; candidates are measured on whichever server the tracker
hands out. The fast test (part of ``make test``) checks with a tiny budget that the
records in the database were measured on the servers: each server's own log names
every module a client loaded on it for timing. The slow one kills a server mid-run:
that costs its in-flight trials, not the run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tvm_autoglm.tuning import database as dbmod

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args, log=None):
    env = dict(os.environ, TVM_NUM_THREADS="1")
    err = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it; closed below
    try:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    finally:
        if log:
            err.close()


def _wait_tracker(port: int, timeout: float = 120) -> None:
    """Servers that find no tracker retry only every 5 s: start them once it answers."""
    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rpc.connect_tracker("127.0.0.1", port).summary()
            return
        except Exception:  # noqa: BLE001 - tracker still starting
            time.sleep(0.2)
    pytest.fail(f"the RPC tracker did not answer within {timeout} s")


def _wait_servers(port: int, key: str, n: int, timeout: float = 300) -> None:
    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = rpc.connect_tracker("127.0.0.1", port).summary()
            if info.get("queue_info", {}).get(key, {}).get("free", 0) >= n:
                return
        except Exception:  # noqa: BLE001 - tracker still starting
            pass
        time.sleep(1)
    pytest.fail(f"{n} RPC servers did not register within {timeout} s")


#: What tvm.rpc.server logs (INFO, stderr) each time a client loads a built module on it to time it.
LOADED = "load_module "


@pytest.fixture
def rpc_cluster(tmp_path):
    """(tracker port, key, server processes, server log files): a local tracker and two servers."""
    port, key = _free_port(), "autoglm-test"
    tracker = _spawn(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)])
    logs = [tmp_path / f"server{i}.log" for i in range(2)]
    _wait_tracker(port)
    servers = [
        _spawn(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(_free_port()), "--port-end", "65000",
                "--tracker", f"127.0.0.1:{port}", "--key", key], log)
        for log in logs
    ]
    try:
        _wait_servers(port, key, 2, timeout=120)
        yield port, key, servers, logs
    finally:
        for p in [*servers, tracker]:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def test_tuning_records_come_back_from_two_rpc_servers(rpc_cluster, tiny_model, tmp_path):
    """A tiny budget through the tracker: every valid record was timed on one of the servers."""
    from tvm_autoglm import tune

    port, key, _servers, logs = rpc_cluster
    db = tmp_path / "db"
    # the smallest run that still goes through the runner: one kernel, one batch of 4, nothing re-measured locally
    result = tune(tiny_model, trials=4, tuning_db=db, seed=0, progress=False, use_shipped_schedules=False,
                  rpc_tracker=f"127.0.0.1:{port}", rpc_key=key, trials_per_iter=4, max_tasks=1,
                  with_baselines=False, remeasure_top=0, check_in_model=False)
    assert result.trials >= 4
    records = dbmod.open_db(db, create=False).get_all_tuning_records()
    valid = [r for r in records if r.run_secs and all(float(s) < 1e9 for s in r.run_secs)]
    assert len(valid) >= 2, [r.run_secs for r in records]  # most of the 4 candidates build and run
    loaded = [log.read_text(errors="replace").count(LOADED) for log in logs]
    # a local runner (the RPC flags silently ignored) would leave both logs without a single load
    assert sum(loaded) >= len(valid), loaded
    assert all(t["best_us"] is not None for t in result.tasks)


@pytest.mark.slow
def test_trials_run_on_rpc_servers_and_survive_a_dead_server(rpc_cluster, tiny_model, tmp_path):
    from tvm_autoglm import tune

    port, key, servers, _logs = rpc_cluster
    db = tmp_path / "db"
    killed = threading.Event()

    def kill_one_after_first_batch(point):
        if not killed.is_set():
            os.killpg(servers[0].pid, signal.SIGKILL)
            killed.set()

    result = tune(tiny_model, trials=24, tuning_db=db, progress=False, use_shipped_schedules=False,
                  rpc_tracker=f"127.0.0.1:{port}", rpc_key=key, trials_per_iter=8, on_batch=kill_one_after_first_batch)
    assert killed.is_set()
    assert result.trials >= 24 and result.stop_reason == "trials"
    records = dbmod.open_db(db, create=False).get_all_tuning_records()
    valid = [r for r in records if r.run_secs and all(float(s) < 1e9 for s in r.run_secs)]
    assert len(valid) >= 16  # at most one batch of 8 lost with the dead server
    assert all(t["best_us"] is not None for t in result.tasks)
