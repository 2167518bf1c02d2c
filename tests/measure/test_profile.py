"""``auto-glm profile``: per-kernel times via the VM instrument hook, FLOPs from the manifest, a real-browser HTML check."""

from __future__ import annotations

import json
import shutil
import subprocess

import tempfile
from pathlib import Path

import pytest

from tvm_autoglm.measure.profile import profile_session  # noqa: E402
from tvm_autoglm.measure.report_html import profile_html  # noqa: E402

FAKE_PEAK = {"gflops": 100.0, "threads": 2, "method": "test", "measured": "now"}


def _session(path):
    from tvm_autoglm.native_log import quiet_native_stderr
    from tvm_autoglm.runtime import Session

    with quiet_native_stderr():
        return Session.open(path)


def test_manifest_records_kernel_flops(mm_build):
    manifest = json.loads(Path(mm_build["so"]).with_suffix(".json").read_text())
    flops = manifest["kernel_flops"]
    # O0: one kernel per op. x[8,64] @ w1[64,32] and r[8,32] @ w2[32,4]: 2*M*N*K each; "matmul" names both shapes
    matmuls = {k: v for k, v in flops.items() if k.startswith("matmul")}
    assert sorted(matmuls.values()) == [2 * 8 * 32 * 4, 2 * 8 * 64 * 32]
    assert set(flops) <= set(manifest["kernels"])


def test_profile_rows_cover_every_kernel_call(mm_build):
    session = _session(mm_build["so"])
    inputs = {"x": __import__("numpy").ones((8, 64), "float32")}
    prof = profile_session(session, inputs, repeat=5, warmup=1, peak=FAKE_PEAK)
    kernels = {r.name: r for r in prof.kernels}
    assert set(kernels) == set(session.manifest["kernels"])
    assert all(r.calls == 1 for r in kernels.values())
    assert prof.kernels == sorted(prof.kernels, key=lambda r: r.ms, reverse=True)
    # kernels + builtins + overhead account for the whole run, each call counted once
    assert sum(r.ms for r in prof.rows if r.kind != "overhead") <= prof.total_ms * (1 + 1e-9)
    assert sum(r.share for r in prof.rows) == pytest.approx(1.0, rel=1e-9)
    big = kernels[max(session.manifest["kernel_flops"], key=session.manifest["kernel_flops"].get)]
    assert big.flops == 2 * 8 * 64 * 32
    assert big.gflops == pytest.approx(big.flops / (big.ms / 1000) / 1e9)
    assert big.peak_fraction == pytest.approx(big.gflops / 100.0)
    # the hook is removed afterwards: a plain run still works and matches
    assert session.run(inputs)["y"].shape == (8, 4)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get update && apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium(chain_builds, tmp_path):
    session = _session(chain_builds[0])
    from tvm_autoglm.runtime import example_inputs

    prof = profile_session(session, example_inputs(session.input_specs), repeat=3, warmup=1, peak=FAKE_PEAK)
    top = prof.kernels[0].name
    report = tmp_path / "report.html"
    report.write_text(profile_html(prof, "machine: test"))
    text = report.read_text()
    for fetch in ("http://", "https://", " src=", " href=", "<link", "@import"):
        assert fetch not in text  # self-contained: nothing to fetch

    with tempfile.TemporaryDirectory() as profile_dir:
        result = subprocess.run(
            [
                _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri(),
            ],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = result.stdout
    assert 'data-ready="1"' in dom  # the inline script ran to the end
    assert f'<td class="name">{top}</td>' in dom  # the top kernel is named in the rendered table
    assert dom.count("<rect") == len(prof.rows)  # one bar per row


def test_cli_profile_writes_html_png_and_json(mm_build, tmp_path, auto_glm, monkeypatch):
    html, png = tmp_path / "p.html", tmp_path / "p.png"
    monkeypatch.setenv("AUTOGLM_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = auto_glm("profile", "--binary", mm_build["so"], "--repeat", "3", "--html", html, "--png", png, "--json")
    assert code == 0, err
    data = json.loads(out)
    names = [r["name"] for r in data["rows"] if r["kind"] == "kernel"]
    assert set(names) == set(json.loads(Path(mm_build["so"]).with_suffix(".json").read_text())["kernels"])
    assert data["peak"]["gflops"] > 0
    # measured once and cached, unless another process held a core meanwhile (then it says so)
    assert (tmp_path / "cache" / "peak.json").is_file() != data["peak"]["method"].endswith("not cached")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert names[0] in html.read_text()


def test_a_parallel_peak_below_the_single_thread_scaling_is_not_trusted():
    from tvm_autoglm.measure.machine import parallel_peak_is_plausible

    one_thread = {1: 103.0}.__getitem__  # GFLOP/s of one thread, as measure_peak_gflops(1) would answer
    assert parallel_peak_is_plausible(206.0, 2, one_thread)
    assert not parallel_peak_is_plausible(101.3, 2, one_thread)  # the stale value this box once cached
    assert parallel_peak_is_plausible(50.0, 1, one_thread)  # nothing to compare a single thread with
