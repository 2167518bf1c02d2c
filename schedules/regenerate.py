"""Regenerates the shipped schedules: schedules/<family>/<model>/ (best record per kernel).

    .venv/bin/python schedules/regenerate.py --models bert gpt-neox resnet50 --minutes 25 20 20

Each model is tuned into its own working database under the user cache
(resumable: re-running continues from the records already there), then only the
best record of each of that model's kernels is exported here, so the shipped
files stay small. Workloads are specific to the target *and* to the fused module
the current passes produce: regenerate after changing passes that alter kernels.
``--export-only`` re-exports from the working databases without tuning.

Records go to the target's ISA family folder (``targets.isa_family``: ``x86-avx2``,
``x86-avx512``, ``x86-avx512-vnni-bf16``), where every CPU of that family picks them
up; info.json says which CPU they were measured on. Tune on a machine of the family
you regenerate (``--target cpu`` measures on this machine): timing is only real there.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from tvm_autoglm.backends import for_target
    from tvm_autoglm.pipeline import compile_model
    from tvm_autoglm.targets import load_target
    from tvm_autoglm.tuning import database as dbmod
    from tvm_autoglm.tuning import tasks as taskmod
    from tvm_autoglm.tuning import tune
    from tvm_autoglm.tuning.models import SHIPPED_NAMES, reference_model
    from tvm_autoglm.tuning.shipping import shippable

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["bert", "gpt-neox", "resnet50"], choices=sorted(SHIPPED_NAMES))
    ap.add_argument("--minutes", nargs="+", type=float, default=[25, 20, 20], help="wall-time budget per model")
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-root", default=None, help="working databases (default: ~/.cache/tvm_autoglm/tuning-shipped/<target>)")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--deadline", default=None, help="UTC HH:MM after which no model starts tuning")
    args = ap.parse_args(argv)

    spec = load_target(args.target)
    family = for_target(spec).shipped_schedules_key(spec)
    if not family:
        ap.error(f"target {spec.name} (mcpu {spec.tvm_config.get('mcpu')}) has no ISA family that ships schedules "
                 "(x86 with AVX2+FMA or AVX-512 only)")
    host_family = for_target(load_target("cpu")).shipped_schedules_key(load_target("cpu"))
    if not args.export_only and family != host_family:
        ap.error(f"target {spec.name} is family {family} but this machine is {host_family}: "
                 f"records for {family} must be measured on a {family} machine")
    work_root = Path(args.work_root) if args.work_root else dbmod.default_dir(spec.name).parent.parent / "tuning-shipped" / spec.name
    minutes = (args.minutes * len(args.models))[: len(args.models)] if len(args.minutes) == 1 else args.minutes
    for name, mins in zip(args.models, minutes):
        path = reference_model(name)
        work = work_root / SHIPPED_NAMES[name]
        if not args.export_only and not _past(args.deadline):
            res = tune(path, spec, opt_level=3, trials=None, time_budget=mins * 60, tuning_db=work, seed=args.seed,
                       use_shipped_schedules=False, label=f"tune {name}")
            (work / "last_run.json").write_text(json.dumps(res.to_json(), indent=1))
        build = compile_model(path, spec, 3, until="relax").build
        keep, skip = taskmod.extract(build.mod, spec.tvm_target(), min_share=0.0)
        out = ROOT / "schedules" / family / SHIPPED_NAMES[name]
        tasks = keep + skip
        mods = [t.mod for t in tasks]
        winners, reasons = shippable(work, mods, [t.name for t in tasks])  # beat the default rules, not vetoed
        for line in reasons:
            print(f"[regenerate] {name}: {line}", file=sys.stderr, flush=True)
        for task, mod in zip(tasks, mods):
            if any(mod is w for w in winners):
                print(f"[regenerate] {name}: {task.name}: ships (a search record beats the default rule, alone and in the model)",
                      file=sys.stderr, flush=True)
        if not winners:
            # Shipping records that only equal the default rules would add nothing but bytes;
            # shipping ones that lose would make every user's build slower.
            if out.exists():
                shutil.rmtree(out)
            print(f"[regenerate] {name}: no record beats the default schedule rules (in isolation and in the model): nothing shipped", file=sys.stderr, flush=True)
            continue
        n = dbmod.export_best(work, out, winners)
        info = {"model": name, "family": family, "target": spec.name, "tuned_on": _this_cpu(),
                "tvm_target": str(spec.tvm_target()), "command": " ".join(shlex.quote(a) for a in sys.argv), "records": n,
                "kernels": len(keep) + len(skip), "trials_total": dbmod.count_records(work),
                "exported": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        print(f"[regenerate] {name}: {n} best records from {info['trials_total']} measured -> {out}", file=sys.stderr, flush=True)
    return 0


def _this_cpu() -> str:
    """This (the measuring) machine's CPU model and LLVM cpu, e.g. ``AMD EPYC 7B13 64-Core Processor (znver3)``."""
    from tvm.target import codegen

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({codegen.llvm_get_system_cpu()})"


def _past(deadline: str | None) -> bool:
    if not deadline:
        return False
    hh, mm = (int(x) for x in deadline.split(":"))
    now = time.gmtime()
    return (now.tm_hour, now.tm_min) >= (hh, mm)


if __name__ == "__main__":
    sys.exit(main())
