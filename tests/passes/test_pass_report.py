"""PassReport.rewrites / .declines: each pass's own count, shown by inspect and --explain-pass.

The counts are checked on models whose number of rewritable idioms is known by construction
(three Conv+BN pairs, one of which cannot fold; two GELUs; one attention core).
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, cli
from onnx import helper
from passes_helpers import const_node, make_model

from tvm_autoglm.cli.explain import explain_lines
from tvm_autoglm.pipeline import PassReport, build_relax

X = [1, 3, 5, 5]


def _three_conv_bn(seed: int = 4) -> onnx.ModelProto:
    """Three Conv+BN pairs in a chain; the last conv's output is also a graph output, so its BN cannot fold."""
    rng = np.random.default_rng(seed)
    inits, nodes, src = {}, [], "x"
    for i in range(3):
        inits.update({f"W{i}": rng.standard_normal((3, 3, 3, 3)), f"g{i}": rng.random(3) + 0.5, f"b{i}": rng.standard_normal(3),
                      f"m{i}": rng.standard_normal(3), f"v{i}": rng.random(3) + 0.5})
        nodes += [helper.make_node("Conv", [src, f"W{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"g{i}", f"b{i}", f"m{i}", f"v{i}"], [f"y{i}"])]
        src = f"y{i}"
    return make_model(nodes, {"x": X}, {"y2": X, "c2": X}, inits)


def _two_gelus() -> onnx.ModelProto:
    """x -> erf GELU -> erf GELU (torchscript spelling, 5 ops each)."""
    nodes = [const_node("r2", math.sqrt(2.0)), const_node("one", 1.0), const_node("half", 0.5)]
    src = "x"
    for i in range(2):
        nodes += [helper.make_node("Div", [src, "r2"], [f"d{i}"]), helper.make_node("Erf", [f"d{i}"], [f"e{i}"]),
                  helper.make_node("Add", [f"e{i}", "one"], [f"p{i}"]), helper.make_node("Mul", [src, f"p{i}"], [f"t{i}"]),
                  helper.make_node("Mul", [f"t{i}", "half"], [f"g{i}"])]
        src = f"g{i}"
    nodes.append(helper.make_node("Identity", [src], ["y"]))
    return make_model(nodes, {"x": [2, 8]}, {"y": [2, 8]})


def _report(build, name) -> PassReport:
    return next(r for r in build.pass_reports if r.name == name)


def test_fold_conv_bn_counts_two_of_three_and_says_why_not_the_third():
    build = build_relax(_three_conv_bn(), "cpu", opt_level=2)
    report = _report(build, "fold_conv_bn")
    assert report.rewrites == 2 and not report.rewrites_estimated
    assert len(report.declines) == 1
    assert report.declines[0].startswith("nn.conv2d ") and "another consumer" in report.declines[0]
    assert report.to_json()["declines"] == report.declines


def test_gelu_counts_each_idiom_and_unrelated_passes_count_zero():
    build = build_relax(_two_gelus(), "cpu", opt_level=2)
    assert _report(build, "rewrite_gelu").rewrites == 2
    assert _report(build, "fold_conv_bn").rewrites == 0
    assert _report(build, "rewrite_layer_norm").rewrites == 0


def test_tvm_passes_are_marked_estimated():
    """fold_constant is TVM's FoldConstant: its count is the op-histogram difference, flagged as such."""
    build = build_relax(_two_gelus(), "cpu", opt_level=1)
    report = _report(build, "fold_constant")
    assert report.rewrites_estimated
    assert report.rewrites == sum(abs(report.ops_after.get(k, 0) - report.ops_before.get(k, 0)) for k in set(report.ops_before) | set(report.ops_after))


def test_explain_lines():
    counted = PassReport("fold_conv_bn", 0.1, {}, {}, 2, ["nn.conv2d lv3: weight is not a constant"])
    assert explain_lines("fold_conv_bn", [counted]) == ["pass fold_conv_bn: 2 rewrites, 1 declined:", "  nn.conv2d lv3: weight is not a constant"]
    assert explain_lines("rewrite_gelu", [counted]) == [
        "pass rewrite_gelu: did not run (not at this --optimize-level or target kind, or disabled)"]
    estimated = PassReport("fold_constant", 0.1, {"add": 2}, {"add": 1}, 1, [], True)
    assert explain_lines("fold_constant", [estimated.to_json()]) == [
        "pass fold_constant: about 1 rewrites (calls changed; the pass does not count itself), no candidate declined"]


def test_inspect_shows_rewrites_and_explains(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(_three_conv_bn(), path)
    result = cli("inspect", "--model", path, "--optimize-level", 2, "--explain-pass", "fold_conv_bn", check=True)
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.strip().startswith("fold_conv_bn "))
    assert " 2 rw " in row
    at = lines.index("pass fold_conv_bn: 2 rewrites, 1 declined:")
    assert lines[at + 1].startswith("  nn.conv2d ") and "another consumer" in lines[at + 1]
    info = json.loads(cli("inspect", "--model", path, "--optimize-level", 2, "--json", check=True).stdout)
    report = next(p for p in info["passes"] if p["name"] == "fold_conv_bn")
    assert report["rewrites"] == 2 and len(report["declines"]) == 1


@pytest.mark.parametrize("command", ["inspect", "compile"])
def test_explain_unknown_pass_is_a_user_error(tmp_path, command):
    path = tmp_path / "cnn.onnx"
    onnx.save(_three_conv_bn(), path)
    extra = ["--output", tmp_path / "out.so"] if command == "compile" else []
    result = cli(command, "--model", path, "--explain-pass", "fold_conv_bnn", *extra)
    assert result.returncode == 2
    assert_clean_error(result, "unknown pass 'fold_conv_bnn'")


def test_tally_is_per_recording_and_a_throwaway_outside():
    from tvm_autoglm.passes.tally import current, recording

    current().rewrote(5)  # no recording open: goes nowhere
    with recording() as outer:
        current().rewrote()
        with recording() as inner:
            current().declined("a: why")
            current().declined("a: why")  # rewrite_call revisits a candidate: kept once
        current().rewrote(2)
    assert (outer.rewrites, outer.declines, outer.counted) == (3, [], True)
    assert (inner.rewrites, inner.declines) == (0, ["a: why"])
    with recording() as untouched:
        pass
    assert not untouched.counted  # a pass that never asks is estimated from the histogram
