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
