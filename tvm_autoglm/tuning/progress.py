"""One live status line on stderr while tuning.

MetaSchedule's own per-task logs go to files under ``<db>/logs/``; the terminal
gets a single line that is rewritten in place on a TTY (or a plain line per
batch when stderr is a file, so logs stay readable).
"""

from __future__ import annotations

import sys
import time


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressLine:
    def __init__(self, label: str, enabled: bool = True, stream=None):
        self.label = label
        self.enabled = enabled
        self._stream = stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0
        self._last_plain = 0.0

    @property
    def stream(self):
        # Resolved per write: the tuning loop swaps sys.stderr to keep native logs off the terminal.
        return self._stream or sys.stderr

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        line = f"[{self.label}] {text}"
        if self.tty:
            pad = max(self._width - len(line), 0)
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self.stream.flush()
        elif force or time.monotonic() - self._last_plain >= 5.0:
            self._last_plain = time.monotonic()
            print(line, file=self.stream, flush=True)

    def done(self, text: str | None = None) -> None:
        if not self.enabled:
            return
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        if text:
            print(f"[{self.label}] {text}", file=self.stream, flush=True)
