"""Peak RSS and wall time of compiling zoo models (reliability issue: bert-large must stay within 24 GiB).

Each compile runs in its own process so its peak RSS is its own.
    .venv/bin/python benchmarks/compile_memory.py --models bert:large bert:base
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, resource
from tvm_autoglm import zoo
import tvm_autoglm
name, size, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = zoo.cached(name, size, seq, 1, "torchscript")
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.time()
model = tvm_autoglm.compile(path, opt_level=3, input_shapes=zoo.input_shapes(name, size, seq, 1))
seconds = time.time() - start
print(json.dumps({"model": f"{name}-{size}", "onnx_bytes": path.stat().st_size, "compile_s": round(seconds, 1),
                  "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                  "kernels": len(model.kernels)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["bert:large"])
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    rows = []
    for item in args.models:
        name, size = item.split(":")
        proc = subprocess.run([sys.executable, "-c", CHILD, name, size, str(args.seq)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print("\n| model | ONNX size | compile time | peak RSS | kernels |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} s{args.seq} | {r['onnx_bytes'] / 2**20:.0f} MiB | {r['compile_s']} s | {r['peak_rss_gib']} GiB | {r['kernels']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
