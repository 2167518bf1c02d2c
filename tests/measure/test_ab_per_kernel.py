"""``auto-glm ab --per-kernel``: interleaved per-kernel profiles of two builds (replaces benchmarks/kernel_ab.py).

Structure only, never times: which kernels are listed on which side, the ratio column
present exactly where both builds have the kernel, the reports written.
"""

from __future__ import annotations

import json

import onnx
import pytest
from _measure_cli import assert_one_line_error
from _measure_models import elementwise_chain

from tvm_autoglm.measure.kernel_ab import KernelPair, pair_kernels
from tvm_autoglm.runtime import read_manifest
from tvm_autoglm.runtime.manifest import manifest_path_for


@pytest.fixture(scope="module")
def small_chain(tmp_path_factory) -> dict:
    """A 6-op elementwise chain on an odd shape: O0 has one kernel per op, O3 one fused kernel."""
    import tvm_autoglm

    work = tmp_path_factory.mktemp("kernel_ab")
    model = work / "chain.onnx"
    onnx.save(elementwise_chain(ops=6, shape=(33, 65)), model)
    return {level: tvm_autoglm.compile(model, opt_level=level).export(work / f"chain_o{level}.so") for level in (0, 3)}


def _kernels(so) -> set[str]:
    return set(read_manifest(manifest_path_for(so))["kernels"])


def test_per_kernel_table_lists_the_kernels_of_both_builds(small_chain, auto_glm, tmp_path):
    o0, o3 = small_chain[0], small_chain[3]
    assert len(_kernels(o0)) == 6 and len(_kernels(o3)) == 1  # the premise: different kernel sets
    html, png = tmp_path / "ab.html", tmp_path / "ab.png"
    code, out, err = auto_glm("ab", "--a", o0, "--b", o3, "--per-kernel", "--rounds", "1", "--warmup", "0", "--threads", "1", "--json", "--html", html)
    assert code == 0, err
    data = json.loads(out)
    rows = {r["kernel"]: r for r in data["kernels"]}
    assert {n for n, r in rows.items() if r["a_ms"] is not None} == _kernels(o0)
    assert {n for n, r in rows.items() if r["b_ms"] is not None} == _kernels(o3)
    assert set(rows) == _kernels(o0) | _kernels(o3)
    assert all(r["ratio_b_to_a"] is None and r["in"] in ("A only", "B only") for r in rows.values())  # nothing to divide
    assert data["total"]["a_ms"] > 0 and data["total"]["b_ms"] > 0
    assert all(d["max_abs"] <= 1e-6 for d in data["parity"].values())  # fused or not, the same computation
    page = html.read_text()
    assert all(name in page for name in rows) and 'id="report-data"' in page
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    code, out, err = auto_glm("ab", "--a", o0, "--b", o3, "--per-kernel", "--rounds", "1", "--warmup", "0", "--threads", "1", "--png", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = out.splitlines()
    assert lines[0].split() == ["kernel", "A", "ms", "B", "ms", "B/A"]
    for name in rows:  # the text table names every kernel, '-' on the side that lacks it
        (line,) = [ln for ln in lines if ln.startswith(name + " ")]
        assert line.split()[2 if name in _kernels(o0) else 1] == "-"


def test_per_kernel_same_build_pairs_every_kernel(small_chain, auto_glm):
    o0 = small_chain[0]
    code, out, err = auto_glm("ab", "--a", o0, "--b", o0, "--per-kernel", "--rounds", "1", "--warmup", "0", "--threads", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {r["kernel"] for r in data["kernels"]} == _kernels(o0)
    for r in data["kernels"]:
        assert r["in"] == "both" and r["ratio_b_to_a"] == pytest.approx(r["b_ms"] / r["a_ms"])
    assert all(d["max_abs"] == 0.0 for d in data["parity"].values())


def test_per_kernel_rejects_bad_counts(small_chain, auto_glm):
    o0 = small_chain[0]
    assert_one_line_error(auto_glm("ab", "--a", o0, "--b", o0, "--per-kernel", "--rounds", "0"), "--rounds")
    assert_one_line_error(auto_glm("ab", "--a", o0, "--b", o0, "--per-kernel", "--top", "-1"), "--top")


def test_pair_kernels_orders_slowest_first_and_keeps_one_sided_kernels():
    pairs = pair_kernels({"k1": [1.0, 3.0, 2.0], "only_a": [0.5]}, {"k1": [1.0], "only_b": [5.0]})
    assert [p.name for p in pairs] == ["only_b", "k1", "only_a"]
    by = {p.name: p for p in pairs}
    assert (by["k1"].a_ms, by["k1"].b_ms, by["k1"].ratio) == (2.0, 1.0, 0.5)  # medians over rounds
    assert by["only_a"].side == "A only" and by["only_a"].ratio is None
    assert KernelPair("z", 0.0, 1.0).ratio is None  # no division by a zero-time kernel
