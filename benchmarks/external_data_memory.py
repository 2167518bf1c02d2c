"""Peak RSS of compiling an ONNX model with external data (issue #24: large models), weights embedded or external.

Builds a synthetic chain of ``--layers`` MatMul + Add + Relu layers of ``--dim`` x ``--dim`` fp32
weights (24 x 2560 x 2560: 629 MB), saved with ``save_as_external_data``, then compiles and
exports it in a fresh process per configuration and prints the process's peak RSS
(``ru_maxrss``), with the weight bytes for scale. ``--tree DIR`` compiles with another
checkout's ``tvm_autoglm`` (e.g. the commit before external-data loading) for the before
number; the tree's API must accept ``weights=`` for ``--weights external``.

    .venv/bin/python benchmarks/external_data_memory.py --weights embedded external
    .venv/bin/python benchmarks/external_data_memory.py --tree /tmp/old --weights embedded
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
sys.modules["torch"] = None
import numpy as np
import tvm_autoglm
model, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.time()
kwargs = {"weights": mode} if mode != "embedded" else {}
built = tvm_autoglm.compile(model, opt_level=3, **kwargs)
built.export(out)
seconds = time.time() - start
x = np.random.default_rng(0).standard_normal(built.inputs[0]["shape"]).astype("float32")
y = built.run(x=x)["y"]
weights = out[:-3] + ".weights"
print(json.dumps({"tree": os.path.dirname(os.path.dirname(tvm_autoglm.__file__)), "weights": mode,
                  "compile_export_s": round(seconds, 1), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "so_mib": round(os.path.getsize(out) / 2**20, 1),
                  "weights_mib": round(os.path.getsize(weights) / 2**20, 1) if os.path.exists(weights) else 0,
                  "y_checksum": float(np.abs(y).sum())}))
"""


def make_model(folder: Path, layers: int, dim: int) -> tuple[Path, int]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype("float32"), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal(dim).astype("float32") * 0.1, f"b{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [out])]
        prev = out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "chain.onnx"
    onnx.save(model, path, save_as_external_data=True, location="chain.onnx.data")
    return path, sum(t.nbytes for t in (numpy_helper.to_array(i) for i in inits))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--dim", type=int, default=2560)
    parser.add_argument("--weights", nargs="+", default=["embedded", "external"])
    parser.add_argument("--tree", default=None, help="checkout whose tvm_autoglm compiles (default: this one)")
    args = parser.parse_args()
    tree = args.tree or str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory(prefix="autoglm-extdata-") as tmp:
        path, weight_bytes = make_model(Path(tmp), args.layers, args.dim)
        print(f"model: {args.layers} x MatMul {args.dim}x{args.dim} fp32, {weight_bytes / 2**20:.0f} MiB of external data", flush=True)
        env = {**os.environ, "PYTHONPATH": tree, "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", "1")}
        for mode in args.weights:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(Path(tmp) / f"{mode}.so"), mode],
                                  capture_output=True, text=True, env=env, cwd=tmp)  # cwd: not this checkout
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["weight_mib"] = round(weight_bytes / 2**20)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
