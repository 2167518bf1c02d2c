"""``--explain-pass NAME`` (compile, inspect): what a pass rewrote and why it left candidates alone.

A pass that did nothing on a model is the usual "why is my conv still followed by a
batch_norm?" question; the op histogram cannot answer it, the pass's own decline reasons
(``passes/tally.py``) can.
"""

from __future__ import annotations


def add_explain_flag(parser) -> None:
    parser.add_argument("--explain-pass", action="append", default=[], metavar="NAME",
                        help="print how many rewrites the named pass made and why it declined each candidate it left (repeatable)")


def check_names(names) -> None:
    """Refuse an unknown pass name up front (exit 2), before minutes of compiling."""
    from ..passes import get_pass

    for name in names:
        get_pass(name)


def explain_lines(name: str, reports: list) -> list[str]:
    """The lines ``--explain-pass name`` prints for one build's pass reports (dicts or PassReport)."""
    rows = [r if isinstance(r, dict) else r.to_json() for r in reports]
    report = next((r for r in rows if r["name"] == name), None)
    if report is None:
        return [f"pass {name}: did not run (not at this --optimize-level or target kind, or disabled)"]
    count = report.get("rewrites")
    if count is None:
        head = f"pass {name}: does not count its rewrites"
    elif report.get("rewrites_estimated"):
        head = f"pass {name}: about {count} rewrites (calls changed; the pass does not count itself)"
    else:
        head = f"pass {name}: {count} rewrite{'s' if count != 1 else ''}"
    declines = report.get("declines") or []
    if not declines:
        return [f"{head}, no candidate declined"]
    return [f"{head}, {len(declines)} declined:"] + [f"  {reason}" for reason in declines]
