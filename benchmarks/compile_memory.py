"""Peak RSS and wall time of compiling zoo models (reliability issue: bert-large must stay within 24 GiB).

The ONNX file is built (or found in the zoo cache) in one process and compiled in
another, so the compile's peak RSS is the compile's own and not the PyTorch
export's, which needs more memory than the compile for the same model.
    .venv/bin/python benchmarks/compile_memory.py --models bert:large bert:base
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

EXPORT = r"""
import json, sys, time, resource
from tvm_autoglm import zoo
name, size, seq, exporter = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
start = time.time()
path = zoo.cached(name, size, seq, 1, exporter)
print(json.dumps({"path": str(path), "export_s": round(time.time() - start, 1),
                  "export_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))
"""

COMPILE = r"""
import json, sys, time, resource
from pathlib import Path
from tvm_autoglm import zoo
import tvm_autoglm
name, size, seq, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.time()
model = tvm_autoglm.compile(str(path), opt_level=3, input_shapes=zoo.input_shapes(name, size, seq, 1))
seconds = time.time() - start
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"model": f"{name}-{size}", "onnx_bytes": path.stat().st_size, "compile_s": round(seconds, 1),
                  "rss_before_compile_gib": round(rss_before / 2**20, 2), "peak_rss_gib": round(peak / 2**20, 2),
                  "kernels": len(model.kernels)}))
"""


def _child(code: str, *argv: str) -> dict | None:
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        print(f"child exited with {proc.returncode}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["bert:large"])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--exporter", default="dynamo", help="zoo exporter (dynamo, as the benchmarks use, or torchscript)")
    args = parser.parse_args()
    rows = []
    for item in args.models:
        name, size = item.split(":")
        built = _child(EXPORT, name, size, str(args.seq), args.exporter)
        if built is None:
            return 1
        row = _child(COMPILE, name, size, str(args.seq), built["path"])
        if row is None:
            return 1
        row.update(built)
        rows.append(row)
        print(row, flush=True)
    print("\n| model | ONNX size | compile time | peak RSS (compile process) | kernels |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} s{args.seq} | {r['onnx_bytes'] / 2**20:.0f} MiB | {r['compile_s']} s | {r['peak_rss_gib']} GiB | {r['kernels']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
