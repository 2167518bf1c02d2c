"""Recurrent models (torch.nn.LSTM / GRU exported to ONNX) vs onnxruntime, interleaved.

    TVM_NUM_THREADS=2 nice -n 19 .venv/bin/python benchmarks/bench_rnn.py
    .venv/bin/python benchmarks/bench_rnn.py --only lstm2-h128 --repeat 50

Each case: a seeded torch module exported with ``torch.onnx.export(dynamo=False)``,
compiled at O3 for the host (``cpu`` target), then ``auto-glm bench --vs ort`` (the same
measurement: interleaved, noise-filtered medians, onnxruntime at its fastest optimisation
level, both at ``--threads`` threads, inter-op 1). Prints one row per case and the
max abs difference of every output against onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# name: (cell, layers, bidirectional, input, hidden, seq, batch)
CASES = {
    "lstm2-h128": ("LSTM", 2, False, 64, 128, 32, 1),
    "lstm2-h256": ("LSTM", 2, False, 64, 256, 100, 1),
    "bilstm2-h128": ("LSTM", 2, True, 64, 128, 32, 1),
    "gru2-h256": ("GRU", 2, False, 64, 256, 100, 1),
}


def export_torch_rnn(path: Path, cell: str, layers: int, bidirectional: bool, input_size: int, hidden: int, seq: int, batch: int, seed: int = 0) -> None:
    """A seeded torch.nn.LSTM/GRU (sequence-first) as ONNX with one input ``x`` and outputs y, h_n (, c_n)."""
    import torch

    torch.manual_seed(seed)
    module = getattr(torch.nn, cell)(input_size, hidden, num_layers=layers, bidirectional=bidirectional).eval()
    x = torch.randn(seq, batch, input_size)
    outputs = ["y", "h_n"] + (["c_n"] if cell == "LSTM" else [])

    class Flat(torch.nn.Module):  # LSTM returns (y, (h, c)): flatten for the exporter
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, inp):
            y, state = self.inner(inp)
            return (y, *state) if isinstance(state, tuple) else (y, state)

    torch.onnx.export(Flat(module), (x,), str(path), input_names=["x"], output_names=outputs, opset_version=17, dynamo=False)


def run_case(name: str, work: Path, threads: int, repeat: int) -> dict:
    import tvm_autoglm
    from tvm_autoglm.cli.cmd_bench import bench
    from tvm_autoglm.measure import harness

    cell, layers, bidir, input_size, hidden, seq, batch = CASES[name]
    onnx_path = work / f"{name}.onnx"
    export_torch_rnn(onnx_path, cell, layers, bidir, input_size, hidden, seq, batch)
    so_path = work / f"{name}.so"
    tvm_autoglm.compile(str(onnx_path), target="cpu", opt_level=3).export(str(so_path))
    x = np.random.default_rng(1).standard_normal((seq, batch, input_size)).astype("float32")
    ours = tvm_autoglm.load(str(so_path)).run(x=x)
    ref = harness.ort_reference(str(onnx_path), {"x": x}, threads)
    err = max(float(np.abs(ours[k] - ref[k]).max()) for k in ref)
    result = bench(str(so_path), ["ort"], str(onnx_path), {"x": x}, threads, repeat=repeat, log=lambda *_: None)
    rows = {r["name"]: r for r in result["candidates"]}
    ort_row = rows["onnxruntime"]
    ours_row = next(r for n, r in rows.items() if n != "onnxruntime")
    return {"case": name, "ours_ms": ours_row["median_ms"], "ort_ms": ort_row["median_ms"], "max_abs_err": err,
            "machine": result["machine"], "dropped": result["dropped"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(CASES), help="run only these cases (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="threads for TVM and onnxruntime (default: physical cores)")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    from tvm_autoglm.measure.harness import use_threads
    from tvm_autoglm.measure.machine import machine_line

    args.threads = use_threads(args.threads)  # before any thread pool starts

    names = args.only or list(CASES)
    print(f"{'case':<14} {'cell':<5} {'layers':>6} {'bidir':>5} {'in':>4} {'hidden':>6} {'seq':>4} {'batch':>5}  {'ours ms':>9} {'ort ms':>9} {'ours/ort':>8} {'max|err|':>9}")
    machine = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = run_case(name, Path(tmp), args.threads, args.repeat)
            cell, layers, bidir, input_size, hidden, seq, batch = CASES[name]
            print(f"{name:<14} {cell:<5} {layers:>6} {str(bidir):>5} {input_size:>4} {hidden:>6} {seq:>4} {batch:>5}  "
                  f"{row['ours_ms']:9.3f} {row['ort_ms']:9.3f} {row['ours_ms'] / row['ort_ms']:8.3f} {row['max_abs_err']:9.2e}", flush=True)
            machine = row["machine"]
    if machine:
        print(machine_line(machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
