"""Quieting TVM's native log lines that carry no information for users.

Exporting and loading a Relax executable makes TVM's C++ runtime print
"Warning: Scope Saving:"/"Scope Loaded:" lines to the process's stderr (fd 2),
which Python's ``sys.stderr`` redirection cannot catch. We capture fd 2 around
those calls and replay every other line, so real warnings still show.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager

_NOISE = ("Warning: Scope Saving:", "Warning: Scope Loaded:")

#: Printed by topi.take each time a Gather is legalized (several times per compile). The
#: runtime checks every input that indexes a constant table before each call (manifest
#: "index_ranges"), so the user can do nothing about this line.
FAST_TAKE = ("Warning: Fast mode segfaults when there are out-of-bounds indices",)


@contextmanager
def quiet_native_stderr(drop: tuple[str, ...] = _NOISE):
    """Capture fd 2 for the block and replay every line that contains none of ``drop``."""
    # The C++ runtime writes to fd 2 whatever sys.stderr is (pytest, notebooks and
    # callers replace the Python object, not the descriptor), so capture fd 2 itself.
    fd = 2
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (AttributeError, ValueError, OSError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if not any(noise in line for noise in drop):
                    print(line, file=sys.stderr)


@contextmanager
def native_stderr_to_file(path):
    """Send the process's stderr descriptor to the log file ``path`` (appended) for the block,
    while Python's ``sys.stderr`` keeps writing to the real terminal.

    Why: MetaSchedule's C++ side prints per-candidate chatter to stderr for the whole tuning
    run (hours); replaying it afterwards (``quiet_native_stderr``) would flood the terminal,
    so it goes to ``<db>/logs/`` while the live progress line still shows.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    log = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    old_stderr = sys.stderr
    os.dup2(log, fd)
    sys.stderr = _TerminalStderr(real, old_stderr)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = old_stderr
        os.dup2(saved, fd)
        os.close(saved)
        os.close(log)
        real.close()


class _TerminalStderr:
    """``sys.stderr`` while the descriptor is redirected: writes go to a dup of the terminal;
    ``isatty`` answers for the original, so the progress line keeps its TTY behaviour."""

    def __init__(self, real, original):
        self._real = real
        self._original = original

    def write(self, s):
        return self._real.write(s)

    def flush(self):
        self._real.flush()

    def isatty(self):
        return self._original.isatty()

    def fileno(self):
        return self._real.fileno()
