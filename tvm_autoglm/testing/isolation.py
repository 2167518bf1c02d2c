"""Run test cases in a child process so a segfault or a hang is recorded, not fatal.

The fuzzer and the differential tester both compile and run generated models,
and either can hit a native crash inside TVM (TVM installs its own SIGSEGV
handler: no Python trace, the process just dies). A parent process hands the
cases to one worker child at a time; the child prints a tagged JSON line before
and after each case, so when it dies the parent knows which case killed it,
records that case as a crash, and starts a new child on the remaining cases.
"""

from __future__ import annotations

import importlib
import json
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

_TAG = "@@autoglm-case "


def worker_main(cases_file: str, function: str) -> None:
    """Child process: call ``function`` ("module:name") on each case; one JSON line before and after."""
    sys.modules.setdefault("torch", None)  # tvm_ffi imports torch eagerly otherwise (seconds per child)
    module_name, name = function.split(":")
    run_one = getattr(importlib.import_module(module_name), name)
    cases = json.loads(Path(cases_file).read_text())
    for case in cases:
        print(_TAG + json.dumps({"start": case["id"]}), flush=True)
        result = run_one(case)
        print(_TAG + json.dumps({"done": case["id"], "result": result}), flush=True)


def run_isolated(cases: list[dict], function: str, timeout_per_case: float = 60.0, workdir: str | Path | None = None,
                 on_result: Callable[[dict, object], None] | None = None) -> dict[int, object]:
    """``{case id: result}`` for each case (a dict with an ``"id"``), computed by ``function`` in a child.

    ``function`` must catch its own Python exceptions and return something JSON-able.
    A case whose child died gets ``{"crash": "CRASH (exit N)"}``; one that ran past
    ``timeout_per_case`` gets ``{"crash": "HANG (> T s)"}``. ``on_result(case, result)``
    is called as each result arrives (progress reports).
    """
    workdir = Path(workdir or tempfile.mkdtemp(prefix="autoglm-cases-"))
    by_id = {case["id"]: case for case in cases}
    results: dict[int, object] = {}
    pending = list(cases)
    while pending:
        cases_file = workdir / "cases.json"
        cases_file.write_text(json.dumps(pending))
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from tvm_autoglm.testing.isolation import worker_main; worker_main({str(cases_file)!r}, {function!r})"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        current, deadline, crashed = None, None, None
        while True:
            timeout = timeout_per_case * 3 if deadline is None else max(0.0, deadline - time.monotonic())
            if not selector.select(timeout=timeout):
                proc.kill()
                crashed = f"HANG (> {timeout_per_case:.0f} s)"
                break
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                if current is not None:
                    crashed = f"CRASH (exit {proc.returncode})"
                break
            if not line.startswith(_TAG):
                continue  # something in the pipeline printed to stdout
            message = json.loads(line[len(_TAG):])
            if "start" in message:
                current, deadline = message["start"], time.monotonic() + timeout_per_case
            else:
                results[message["done"]] = message["result"]
                if on_result:
                    on_result(by_id[message["done"]], message["result"])
                current, deadline = None, None
        proc.wait()
        selector.close()
        proc.stdout.close()
        if crashed and current is not None:
            results[current] = {"crash": crashed}
            if on_result:
                on_result(by_id[current], results[current])
        before = len(pending)
        pending = [case for case in pending if case["id"] not in results]
        if len(pending) == before:  # the child died before starting any case: do not loop forever
            for case in pending:
                results[case["id"]] = {"crash": f"worker died before the case started (exit {proc.returncode})"}
            pending = []
    return results
