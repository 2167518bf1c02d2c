"""npu-sim: MetaSchedule tile choice vs the exhaustive search on bert-base GEMMs (simulated cycles).

    .venv/bin/python benchmarks/bench_npu_ms.py --trials 32 --seed 0                     # the default (tensorize) route
    .venv/bin/python benchmarks/bench_npu_ms.py --trials 32 --seed 0 --route program

Each shape is one MetaSchedule task (tvm_autoglm/npu/ms_tune/), tuned on its own with
``--trials`` simulator measurements; the exhaustive search of that route
(tensorize.best_block_config / tiling.best_config) is the baseline. Cycles are the simulator's, deterministic, independent of the host machine.
Writes benchmarks/results/npu_metaschedule.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_npu import BERT_BASE_GEMMS  # noqa: E402

from tvm_autoglm.npu import ms_tune  # noqa: E402
from tvm_autoglm.npu.codegen import MatmulShape, TileConfig, matmul_program  # noqa: E402
from tvm_autoglm.npu.config import machine_from  # noqa: E402
from tvm_autoglm.npu.sim import time_program  # noqa: E402
from tvm_autoglm.npu.tensorize import BlockConfig, best_block_config, time_blocks  # noqa: E402
from tvm_autoglm.npu.tiling import best_config  # noqa: E402
from tvm_autoglm.targets import load_target  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    default_route = load_target("npu-sim").extra["npu"].get("route", "tensorize")
    ap.add_argument("--route", choices=["tensorize", "program"], default=default_route)
    ap.add_argument("--out", default=None, help="default: results/npu_metaschedule.md (default route) or npu_metaschedule_<route>.md")
    args = ap.parse_args()
    results = Path(__file__).resolve().parent / "results"
    args.out = args.out or str(results / ("npu_metaschedule.md" if args.route == default_route else f"npu_metaschedule_{args.route}.md"))
    machine = machine_from(load_target("npu-sim").extra)
    peak = machine.macs_per_cycle_per_core
    rows = ["| GEMM | BxMxNxK | exhaustive tile | cycles | MAC util | MetaSchedule tile | cycles | MAC util | trials | tune s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    tot = {"macs": 0, "ex": 0, "ms": 0}
    for name, batch, m, n, k, shared in BERT_BASE_GEMMS:
        shape = MatmulShape(batch, m, n, k, not shared)
        block = args.route == "tensorize"
        ex_cfg, ex_cycles, _ = (best_block_config if block else best_config)(shape, machine)
        with tempfile.TemporaryDirectory() as db:
            start = time.monotonic()
            res = ms_tune.tune_shapes([shape], machine, db, trials=args.trials, seed=args.seed, routes=[args.route])
            secs = time.monotonic() - start
        best = res.best[ms_tune.task_name(shape, args.route)]
        if block:
            t = best["tile"]
            cfg = BlockConfig(t["mb"], t["nb"], t["kb"], t["depth"])
            cycles = time_blocks(shape, cfg, machine)
        else:
            cfg = TileConfig(**best["tile"])
            cycles = time_program(matmul_program(shape, cfg, machine))
        assert cycles == best["cycles"]
        ex_cfg, cfg = TileConfig(*ex_cfg.to_json().values()), TileConfig(*cfg.to_json().values())
        tot["macs"] += shape.macs
        tot["ex"] += ex_cycles
        tot["ms"] += cycles
        rows.append(f"| {name} | {batch}x{m}x{n}x{k} | {ex_cfg.mb}x{ex_cfg.nb}x{ex_cfg.kb} d{ex_cfg.depth} | {ex_cycles:,} | {shape.macs / (ex_cycles * peak):.1%} "
                    f"| {cfg.mb}x{cfg.nb}x{cfg.kb} d{cfg.depth} | {cycles:,} | {shape.macs / (cycles * peak):.1%} | {res.trials} | {secs:.0f} |")
        print(rows[-1], flush=True)
    rows.append(f"| **all seven, summed** | | | {tot['ex']:,} | {tot['macs'] / (tot['ex'] * peak):.1%} | | {tot['ms']:,} | {tot['macs'] / (tot['ms'] * peak):.1%} | | |")
    text = "\n".join([
        f"# npu-sim: MetaSchedule tile choice vs exhaustive search, {args.route} route",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_npu_ms.py --trials {args.trials} --seed {args.seed} --route {args.route}` (1 core, seq 128; "
        "same shapes and dtypes as the GEMM table of npu.md). Cycles are simulated (deterministic); `tune s` is host wall time "
        "of the tuning on a shared, loaded 2-core box and only indicative. "
        + ("Tensorize route: block sizes bm x bn x bk (tile columns), cost = the replay of the kernel's init / block / epilogue calls."
           if args.route == "tensorize" else "Program route: the instruction program's tile."),
        "",
        *rows,
        "",
    ])
    Path(args.out).write_text(text)
    print(rows[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
