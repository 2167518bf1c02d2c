"""Per-kernel A/B of exported builds of one model: interleaved profiles, median ms per kernel.

    ROUNDS=8 TOP=24 .venv/bin/python benchmarks/kernel_ab.py old.so new.so [more.so ...]

Why: a whole-model A/B (`auto-glm ab`) says whether a schedule change pays, not
where; `auto-glm profile` of one build at a time compares kernels measured at
different minutes, which on a shared box can differ by 30%. Here every round
profiles each build once (order fixed, so the columns of one run compare), and
the table gives each kernel's median over the rounds. Builds must come from the
same model (kernels are matched by name).
"""
import os
import statistics
import sys

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

from tvm_autoglm.measure.profile import interleaved_kernel_ms  # noqa: E402
from tvm_autoglm.runtime import Session, example_inputs  # noqa: E402


def main(paths: list[str], rounds: int, top: int) -> None:
    sessions = {p: Session.open(p) for p in paths}
    first = sessions[paths[0]]
    inputs = example_inputs(first.input_specs, index_ranges=first.index_ranges)
    per_kernel, totals = interleaved_kernel_ms(sessions, inputs, rounds, repeat=3, warmup=1, discard_rounds=1)
    names = sorted(per_kernel[paths[0]], key=lambda n: -statistics.median(per_kernel[paths[0]][n]))
    print(f"{'kernel':42s}" + "".join(f"{os.path.basename(p)[:11]:>12s}" for p in paths))
    for name in names[:top]:
        cells = "".join(f"{statistics.median(per_kernel[p][name]) if name in per_kernel[p] else float('nan'):12.3f}" for p in paths)
        print(f"{name[:42]:42s}{cells}")
    print(f"{'all kernels (median of per-round sums)':42s}" + "".join(f"{statistics.median(totals[p]):12.3f}" for p in paths))


if __name__ == "__main__":
    builds = [a for a in sys.argv[1:] if not a.startswith("-")]
    if len(builds) < 2:
        sys.exit(__doc__)
    main(builds, int(os.environ.get("ROUNDS", "4")), int(os.environ.get("TOP", "24")))
