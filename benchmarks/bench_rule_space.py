"""A/B: MetaSchedule's generic design space vs generic + our rule space (tuning/rule_space.py).

    nice -n 0 .venv/bin/python benchmarks/bench_rule_space.py --trials 160 --min-share 0.2

Same model, same trial budget, same seed, a fresh database per arm; only
``tune(rule_space=...)`` differs. Each arm measures the default rule's schedule of
every kernel (the baseline record), searches, then re-measures its two best records
and the baseline side by side (tune's ``verify`` step), so "best" and "default" in
one arm come from the same measuring window. ``--min-share`` keeps only the
heaviest kernels (bert-base s128: the two FFN GEMMs and the QKV GEMM at 0.2), so the
budget is not spread over kernels that cannot move end-to-end latency. Arms run one
after the other; compare each arm's best with its own default, not across arms
only. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rule_records(db_dir: str) -> tuple[int, int]:
    """(records from the rule space, of them at a non-default point)."""
    from tvm_autoglm.tuning import database as dbmod
    from tvm_autoglm.tuning.rule_space import read_decisions

    db = dbmod.open_db(db_dir, create=False)
    ours = nondefault = 0
    for rec in db.get_all_tuning_records():
        values = read_decisions(rec.trace)
        if values:
            ours += 1
            nondefault += any(values)
    return ours, nondefault


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bert")
    ap.add_argument("--size", default="base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--onnx", help="an ONNX file instead of the zoo model")
    ap.add_argument("--trials", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-share", type=float, default=0.2)
    ap.add_argument("--arms", default="generic,rule", help="order of the arms")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)

    from tvm_autoglm import tune, zoo

    if args.onnx:
        path, shapes = args.onnx, None
    else:
        path = str(zoo.cached(args.model, args.size, args.seq))
        shapes = zoo.input_shapes(args.model, args.size, args.seq)
    results = {}
    for arm in args.arms.split(","):
        with tempfile.TemporaryDirectory(prefix=f"rule_space_{arm}_") as tmp:
            t0 = time.monotonic()
            res = tune(path, "cpu", 3, shapes, trials=args.trials, tuning_db=tmp, seed=args.seed, progress=True,
                       use_shipped_schedules=False, min_share=args.min_share, check_in_model=False,
                       rule_space=(arm == "rule"), label=arm)
            ours = _rule_records(tmp)
            results[arm] = {"tasks": res.tasks, "trials": res.trials, "wall_s": round(time.monotonic() - t0, 1),
                            "rule_records": ours[0], "rule_records_nondefault": ours[1]}
    names = [t["name"] for t in next(iter(results.values()))["tasks"]]
    print(f"\n{args.model}-{args.size} s{args.seq}: {args.trials} trials per arm, seed {args.seed}, min share {args.min_share}")
    print(f"{'kernel':44s} {'calls':>5s} {'default us (gen)':>16s} {'best generic':>12s} {'default us (rule)':>17s} {'best rule':>10s}")
    rows = []
    for name in names:
        row = {"kernel": name}
        for arm in results:
            task = next((t for t in results[arm]["tasks"] if t["name"] == name), {})
            row[f"default_{arm}"], row[f"best_{arm}"], row[f"trials_{arm}"] = task.get("default_us"), task.get("best_us"), task.get("trials")
            row["calls"] = task.get("calls")

        def f(v):
            return "-" if v is None else f"{v:.1f}"

        print(f"{name[:44]:44s} {row['calls'] or 0:5d} {f(row.get('default_generic')):>16s} {f(row.get('best_generic')):>12s} "
              f"{f(row.get('default_rule')):>17s} {f(row.get('best_rule')):>10s}")
        rows.append(row)
    for arm, r in results.items():
        print(f"{arm}: {r['trials']} trials in {r['wall_s']} s; rule-space records {r['rule_records']} "
              f"({r['rule_records_nondefault']} at a non-default point); trials per kernel "
              + ", ".join(str(t["trials"]) for t in r["tasks"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "arms": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
