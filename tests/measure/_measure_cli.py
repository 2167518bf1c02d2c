"""Checking auto-glm's user-error contract from in-process runs (see the ``auto_glm`` fixture)."""

from __future__ import annotations


def assert_one_line_error(result, *needles):
    code, _out, err = result
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.startswith("auto-glm: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
