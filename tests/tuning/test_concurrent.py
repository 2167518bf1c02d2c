"""Two tuners on one database: the second waits for the first instead of interleaving appends."""

from __future__ import annotations

import subprocess
import sys

from tvm_autoglm.tuning.database import exclusive

HOLDER = r"""
import sys, time
from pathlib import Path
from tvm_autoglm.tuning.database import exclusive
with exclusive(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    (Path(sys.argv[1]) / "order.txt").open("a").write("first\n")
"""


def test_second_tuner_waits_for_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "2"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    messages = []
    with exclusive(tmp_path, notify=messages.append):
        (tmp_path / "order.txt").open("a").write("second\n")
    holder.wait(timeout=60)
    assert (tmp_path / "order.txt").read_text().splitlines() == ["first", "second"]
    assert messages and f"pid {holder.pid}" in messages[0]


def test_lock_of_a_killed_tuner_is_released(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "600"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=60)
    with exclusive(tmp_path):
        (tmp_path / "order.txt").open("a").write("after kill\n")
    assert (tmp_path / "order.txt").read_text() == "after kill\n"
