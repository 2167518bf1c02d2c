"""Stage-by-stage progress on stderr for long compiles.

Compiling bert-base takes tens of seconds; a user should see which stage is
running and how long each took, not a silent terminal.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class StageLog:
    """Prints ``[compile] stage ... 1.23 s`` lines; silent when ``enabled`` is False."""

    def __init__(self, label: str = "compile", enabled: bool = True, stream=None):
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.timings: list[tuple[str, float]] = []

    def note(self, text: str) -> None:
        if self.enabled:
            print(f"[{self.label}] {text}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        if self.enabled:
            print(f"[{self.label}] {name} ...", end="", file=self.stream, flush=True)
        try:
            yield
        except BaseException:
            if self.enabled:
                print(" failed", file=self.stream, flush=True)
            raise
        elapsed = time.perf_counter() - start
        self.timings.append((name, elapsed))
        if self.enabled:
            print(f" {elapsed:.2f} s", file=self.stream, flush=True)
