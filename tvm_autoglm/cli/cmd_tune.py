"""``auto-glm tune``: measure kernel schedules for a model into a MetaSchedule database.

Compile with ``auto-glm compile ... --tuning-db DIR`` afterwards to use them.
"""

from __future__ import annotations

import json
import sys

from .common import add_model_flags, add_schedule_flags, add_target_flags, parse_dynamic, parse_shapes


def add_parser(subparsers):
    parser = subparsers.add_parser("tune", help="tune kernel schedules (MetaSchedule + XGBoost) into a resumable database")
    add_model_flags(parser)
    add_target_flags(parser, opt_level_help="must match the compile you will use the records for (default 3)")
    add_schedule_flags(
        parser,
        tuning_db_help="database folder (default: ~/.cache/tvm_autoglm/tuning/<target>); re-running resumes",
        shipped_help="do not seed the search with the schedules shipped in schedules/",
    )
    parser.add_argument("--trials", type=int, default=None, help="new measurements this run may make (default 1000 unless --time-budget is given)")
    parser.add_argument("--time-budget", default=None, metavar="DURATION", help="wall-time budget, e.g. 30m, 1h, 90s; stops cleanly, keeping every record")
    parser.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    parser.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT", help="measure on RPC servers registered with this tracker (building stays local)")
    parser.add_argument("--rpc-key", default=None, metavar="KEY", help="device key the RPC servers registered with")
    parser.add_argument("--min-share", type=float, default=0.005, help="skip kernels below this share of estimated cost (default 0.005)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the run summary (tasks, curve) as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def run(args) -> int:
    from ..errors import AutoGLMError
    from ..runtime.manifest import write_json_atomic
    from ..tuning import tune

    if bool(args.rpc_tracker) != bool(args.rpc_key):
        raise AutoGLMError("--rpc-tracker and --rpc-key go together")
    from ..shape_ranges import has_ranges

    shapes = parse_shapes(args)
    dynamic = parse_dynamic(args)
    if has_ranges(shapes, dynamic["dynamic_dims"]) or dynamic["specialize"]:
        # MetaSchedule tunes static workloads only; a specialised variant's kernels are the static build's
        raise AutoGLMError(
            "tune takes static shapes: tune the sizes that matter (--input-shape input_ids:1x128), then compile the "
            "dynamic build with --specialize seq=128 --tuning-db DIR so its static variants use the records"
        )
    result = tune(
        args.model,
        target=args.target,
        opt_level=args.optimize_level,
        input_shapes=shapes,
        trials=args.trials,
        time_budget=args.time_budget,
        tuning_db=args.tuning_db,
        seed=args.seed,
        rpc_tracker=args.rpc_tracker,
        rpc_key=args.rpc_key,
        progress=not args.quiet,
        use_shipped_schedules=not args.no_shipped_schedules,
        min_share=args.min_share,
    )
    if args.json:
        write_json_atomic(args.json, result.to_json())
    tuned = sum(1 for t in result.tasks if t["best_us"] is not None)
    print(
        f"tuned {tuned}/{len(result.tasks)} kernels ({len(result.skipped_tasks)} negligible skipped): {result.trials} trials, "
        f"{result.records_after} records in {result.database} [{result.stop_reason}]"
    )
    beats = [t for t in result.tasks if t.get("best_us") and t.get("default_us") and t["best_us"] < t["default_us"] * 0.98]
    with_default = [t for t in result.tasks if t.get("default_us")]
    if with_default:
        est_default = sum(t["calls"] * t["default_us"] for t in with_default) / 1e3
        est_best = sum(t["calls"] * min(t["best_us"] or t["default_us"], t["default_us"]) for t in with_default) / 1e3
        print(f"search beat the default schedule on {len(beats)}/{len(with_default)} kernels; "
              f"estimated {est_default:.2f} ms (default schedules) -> {est_best:.2f} ms (best records) over those kernels")
    return 130 if result.stop_reason == "interrupted" else 0
