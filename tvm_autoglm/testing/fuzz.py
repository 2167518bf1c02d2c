"""Mutating ONNX models and checking that the compiler fails cleanly on every one.

The contract under test: whatever bytes a user hands us, the front half of the
compiler (load, support check, clean-up, import, passes) either succeeds or
raises ``AutoGLMError`` - never another exception, never a signal, never a hang.
Every ``codegen_every``-th mutant that imports is also scheduled, compiled and
run, and its outputs compared with onnxruntime's where onnxruntime accepts the
mutant: a wrong answer or an error after the model was accepted is a failure.
Cases run in a child process (``isolation.run_isolated``) so a crash is
observed as a crash rather than taking the test runner down.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import helper

from ..errors import AutoGLMError, InternalError, describe

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
    """'ok', 'clean: <message>', or a failure: 'INTERNAL ...' / 'MISMATCH ...'; other exceptions propagate (a bug).

    A rejection while loading, checking or importing the mutant is clean (a mutant is
    usually an invalid model). Once the model imported, an ``AutoGLMError`` from
    scheduling, codegen or the run is an internal error: we accepted the model and
    then failed on it. A mutant that compiles (``codegen``) is executed and, where
    onnxruntime accepts the same model and inputs, compared with it
    (``difftest.compare``'s tolerance).
    """
    from ..pipeline import compile_model

    try:
        build = compile_model(path, "cpu", 2, until="relax").build
    except InternalError as err:  # a corrupt mutant the support check let through to clean-up/import: a check gap, reported apart
        return "internal: " + err.one_line()[:300]
    except AutoGLMError as err:
        return "clean: " + err.one_line()
    if not codegen:
        return "ok"
    try:
        done = compile_model(build)
        outputs, inputs = _execute(done.executable, done.manifest)
    except AutoGLMError as err:
        return "INTERNAL (accepted, then failed) " + err.one_line()[:300]
    return _compare_with_ort(path, inputs, outputs)


def _execute(executable, manifest: dict):
    from ..runtime.inputs import example_inputs
    from ..runtime.session import Session

    inputs = example_inputs(manifest["inputs"], seed=0, index_ranges=manifest.get("index_ranges"))
    return Session(executable, manifest).run(inputs), inputs


def _compare_with_ort(path: str, inputs: dict, outputs: dict) -> str:
    """'ok' (equal, or onnxruntime rejects the mutant) or 'MISMATCH <output>: <why>'."""
    from .difftest import compare

    try:
        from ..measure.candidates import ort_session

        reference = ort_session(Path(path), threads=1, log_severity=4).run(None, inputs)
    except Exception:  # onnxruntime rejects the mutant: nothing to compare with
        return "ok"
    for (name, ours), ref in zip(outputs.items(), reference):
        verdict = compare(ours, ref)
        if not verdict["ok"]:
            return f"MISMATCH {name}: {verdict['why']}"
    return "ok"


def run_case(case: dict) -> str:
    """Worker side (``isolation``): the case's outcome as a string; a non-AutoGLMError is 'UNCLEAN ...'."""
    try:
        return check_one(case["path"], case["codegen"])
    except Exception as err:  # a bug: not an AutoGLMError
        return f"UNCLEAN {describe(err)}"


def run_campaign(seeds: list[bytes], count: int, seed: int = 0, codegen_every: int = 10, timeout_per_case: float = 60.0, workdir: str | None = None) -> dict:
    """Generate ``count`` mutated models and run them; returns counts and the failures."""
    from .isolation import run_isolated

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
    raw = run_isolated(cases, "tvm_autoglm.testing.fuzz:run_case", timeout_per_case, workdir)
    results = {key: value["crash"] if isinstance(value, dict) else value for key, value in raw.items()}
    summary = {"cases": count, "ok": 0, "clean_errors": 0, "executed": sum(1 for c in cases if c["codegen"]), "internal_errors": [], "failures": []}
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
