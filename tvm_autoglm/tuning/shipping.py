"""Which tuned kernels are worth shipping in schedules/<family>/<model>/ (``targets.isa_family``; GPU: schedules/<target>/).

A shipped record is applied to every user's build without any measuring on
their side, so it has to be a sure win: its best record must be a search
record (a baseline trace is just our default rule's schedule again: shipping
it adds bytes, not speed), and the in-model check must not have vetoed it (a
kernel that wins alone but loses inside the model, as bert-base's FFN record
did: 4.8 vs 6.2 ms isolated, 108 vs 62 ms per inference).
"""

from __future__ import annotations

from pathlib import Path


def shippable(work_dir: Path, mods, names=None) -> tuple[list, list[str]]:
    """(task modules whose best record may ship, one line per kernel left out and why); ``names`` label the lines."""
    from . import database as dbmod
    from .baseline import best_is_search_record
    from .vetoes import read_vetoes, workload_key

    database = dbmod.open_db(Path(work_dir), create=False)
    vetoes = read_vetoes(work_dir)
    winners, reasons = [], []
    for i, mod in enumerate(mods):
        func = next(iter(mod.functions.values()))
        name = names[i] if names else f"kernel {i}"
        if not database.has_workload(mod) or not database.get_top_k(database.commit_workload(mod), 1):
            continue
        if not best_is_search_record(database, mod):
            reasons.append(f"{name}: the default schedule is still the best record")
            continue
        if workload_key(func) in vetoes:
            reasons.append(f"{name}: its record lost inside the model (in-model veto)")
            continue
        winners.append(mod)
    return winners, reasons
