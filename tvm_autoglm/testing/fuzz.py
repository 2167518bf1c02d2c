"""Mutating ONNX models and checking that the compiler fails cleanly on every one.

The contract under test: whatever bytes a user hands us, the front half of the
compiler (load, support check, clean-up, import, passes, and for some cases
codegen) either succeeds or raises ``AutoGLMError`` - never another exception,
never a signal, never a hang. Cases run in a child process (``run_campaign``)
so a crash is observed as a crash rather than taking the test runner down.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import helper

_TAG = "@@autoglm-fuzz "
MUTATIONS = ("flip_bytes", "truncate", "remove_node", "bad_initializer", "dangling_input", "cycle", "huge_dim", "wrong_attr", "shuffle_nodes")


def mutate(model_bytes: bytes, kind: str, rng: random.Random) -> bytes:
    """One mutation of a serialized model; structural ones go through the proto."""
    if kind == "flip_bytes":
        data = bytearray(model_bytes)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == "truncate":
        return model_bytes[: rng.randrange(1, len(model_bytes))]
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    if kind == "remove_node" and graph.node:
        del graph.node[rng.randrange(len(graph.node))]
    elif kind == "bad_initializer" and graph.initializer:
        init = graph.initializer[rng.randrange(len(graph.initializer))]
        if init.raw_data:
            init.raw_data = init.raw_data[: max(0, len(init.raw_data) - rng.randint(1, 16))]
        else:
            init.dims.append(rng.randint(2, 5))
    elif kind == "dangling_input" and graph.node:
        node = graph.node[rng.randrange(len(graph.node))]
        if node.input:
            node.input[rng.randrange(len(node.input))] = f"missing_{rng.randrange(1000)}"
    elif kind == "cycle" and len(graph.node) >= 2:
        first, later = sorted(rng.sample(range(len(graph.node)), 2))
        if graph.node[first].input and graph.node[later].output:
            graph.node[first].input[0] = graph.node[later].output[0]
    elif kind == "huge_dim" and graph.input:
        value = graph.input[rng.randrange(len(graph.input))]
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[rng.randrange(len(dims))].dim_value = rng.choice([1 << 31, 1 << 40, (1 << 62)])
    elif kind == "wrong_attr" and graph.node:
        node = graph.node[rng.randrange(len(graph.node))]
        node.attribute.append(helper.make_attribute(rng.choice(["axis", "perm", "epsilon"]), rng.choice([99, -99, [5, 7, 9]])))
    elif kind == "shuffle_nodes" and len(graph.node) >= 2:
        nodes = list(graph.node)
        rng.shuffle(nodes)
        del graph.node[:]
        graph.node.extend(nodes)
    return model.SerializeToString()


def check_one(path: str, codegen: bool) -> str:
    """'ok', 'clean: <message>' (a user error), or 'internal: <message>' (a stage failed on a
    model the checks accepted: a compiler bug or a gap in the support check); anything else
    propagates (a bug that escaped the one-line errors)."""
    from ..errors import AutoGLMError, InternalError
    from ..pipeline import build_executable, build_relax, schedule

    try:
        build = build_relax(path, "cpu", 2)
        if codegen:
            build_executable(schedule(build), build)
        return "ok"
    except InternalError as err:
        return "internal: " + err.one_line()
    except AutoGLMError as err:
        return "clean: " + err.one_line()


def _worker(cases_file: str) -> None:
    """Child process: run each case, print one JSON line before and after it."""
    sys.modules.setdefault("torch", None)
    cases = json.loads(Path(cases_file).read_text())
    for case in cases:
        print(_TAG + json.dumps({"start": case["id"]}), flush=True)
        try:
            outcome = check_one(case["path"], case["codegen"])
        except Exception as err:  # a bug: not an AutoGLMError
            outcome = f"UNCLEAN {type(err).__name__}: {str(err).strip().splitlines()[-1][:200] if str(err).strip() else ''}"
        print(_TAG + json.dumps({"done": case["id"], "outcome": outcome}), flush=True)


def run_campaign(seeds: list[bytes], count: int, seed: int = 0, codegen_every: int = 10, timeout_per_case: float = 60.0, workdir: str | None = None) -> dict:
    """Generate ``count`` mutated models and run them; returns counts and the failures."""
    rng = random.Random(seed)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="autoglm-fuzz-"))
    cases = []
    for index in range(count):
        base = seeds[index % len(seeds)]
        kind = MUTATIONS[index % len(MUTATIONS)]
        try:
            data = mutate(base, kind, rng)
        except Exception:  # the mutation itself could not parse (e.g. after flips); use raw flips
            data = mutate(base, "flip_bytes", rng)
        path = workdir / f"case{index:04d}_{kind}.onnx"
        path.write_bytes(data)
        cases.append({"id": index, "kind": kind, "path": str(path), "codegen": index % codegen_every == 0})
    results: dict[int, str] = {}
    pending = list(cases)
    while pending:
        cases_file = workdir / "cases.json"
        cases_file.write_text(json.dumps(pending))
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from tvm_autoglm.testing.fuzz import _worker; _worker({str(cases_file)!r})"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        current, deadline = None, None
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        crashed = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not selector.select(timeout=timeout if timeout is not None else timeout_per_case * 3):
                proc.kill()
                crashed = f"HANG (> {timeout_per_case:.0f} s)"
                break
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                if current is not None:
                    crashed = f"CRASH (exit {proc.returncode})"
                break
            if not line.startswith(_TAG):
                continue  # something in the pipeline printed to stdout
            message = json.loads(line[len(_TAG):])
            if "start" in message:
                current, deadline = message["start"], time.monotonic() + timeout_per_case
            else:
                results[message["done"]] = message["outcome"]
                current, deadline = None, None
        proc.wait()
        if crashed and current is not None:
            results[current] = crashed
        pending = [case for case in pending if case["id"] not in results]
    summary = {"cases": count, "ok": 0, "clean_errors": 0, "internal_errors": [], "failures": []}
    for case in cases:
        outcome = results[case["id"]]
        if outcome == "ok":
            summary["ok"] += 1
        elif outcome.startswith("clean: "):
            summary["clean_errors"] += 1
        elif outcome.startswith("internal: "):
            summary["internal_errors"].append({"case": case["id"], "kind": case["kind"], "path": case["path"], "outcome": outcome})
        else:
            summary["failures"].append({"case": case["id"], "kind": case["kind"], "path": case["path"], "outcome": outcome})
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Fuzz the compiler front half with mutated ONNX models.")
    parser.add_argument("models", nargs="+", help="seed ONNX models")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    seeds = [Path(m).read_bytes() for m in args.models]
    start = time.time()
    summary = run_campaign(seeds, args.count, args.seed)
    summary["seconds"] = round(time.time() - start, 1)
    print(json.dumps(summary, indent=2))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
