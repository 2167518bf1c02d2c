"""``auto-glm execute --report npu.json``: what the NPU did during one run.

The counters are reset, the model runs once, and the simulator's totals are
turned into the numbers a hardware team asks for: cycles and latency at the
clock, MAC-array utilization, DMA bytes per scratchpad, peak scratchpad use,
per-op cycles, and what stayed on the host (by calls and by time; host time
is measured wall time of the host kernels, NPU time is simulated).
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from .config import machine_from
from .counters import SCRATCHPADS, for_module


def collect(session, inputs: dict) -> dict:
    """Run once with fresh counters; returns the report dict."""
    from ..errors import AutoGLMError

    manifest = session.manifest
    target = manifest.get("target", {})
    if target.get("kind") != "npu":
        raise AutoGLMError(f"--report needs an npu-sim artifact; this one targets {target.get('name')}")
    machine = machine_from(target)
    handle = for_module(session.module)
    kernels = set(manifest.get("kernels", []))
    host_time: dict[str, float] = {}
    host_calls: dict[str, int] = {}
    npu_calls: dict[str, int] = {}
    starts: dict[str, float] = {}

    def instrument(func, name, before, ret, *args):
        name = str(name)
        if name not in kernels:
            return 0
        if name.startswith("npu_"):
            if before:
                npu_calls[name] = npu_calls.get(name, 0) + 1
            return 0
        if before:
            starts[name] = time.perf_counter()
        else:
            host_time[name] = host_time.get(name, 0.0) + time.perf_counter() - starts.pop(name, time.perf_counter())
            host_calls[name] = host_calls.get(name, 0) + 1
        return 0

    handle.reset()
    session.vm.set_instrument(instrument)
    try:
        session.run(inputs)
    finally:
        session.vm.set_instrument(None)
    snap = handle.snapshot()
    return build_report(snap, machine, manifest, host_time, host_calls, npu_calls)


def build_report(snap: dict, machine, manifest: dict, host_time: dict, host_calls: dict, npu_calls: dict) -> dict:
    by_id = {}
    for name in manifest.get("kernels", []):
        if name.startswith("npu_"):
            by_id[int(name.rsplit("_", 1)[1])] = name
    peak_rate = machine.macs_per_cycle_per_core
    ops = []
    for op in snap["ops"]:
        util = op["macs"] / (op["cycles"] * peak_rate * max(1, op["cores"])) if op["cycles"] else 0.0
        ops.append({**op, "kernel": by_id.get(op["op_id"], f"op{op['op_id']}"), "mac_utilization": round(util, 4),
                    "simulated_us": op["cycles"] / machine.clock_mhz})
    cores = max([op["cores"] for op in snap["ops"]] or [machine.cores])
    cycles = snap["total_cycles"]
    npu_ms = cycles / (machine.clock_mhz * 1e3)
    host_ms = sum(host_time.values()) * 1e3
    n_host, n_npu = sum(host_calls.values()), sum(npu_calls.values())
    return {
        "model": manifest.get("source"),
        "target": manifest.get("target", {}).get("name"),
        "machine": {"clock_mhz": machine.clock_mhz, "cores": cores, "macs_per_cycle_per_core": peak_rate,
                    "scratchpad_bytes": machine.scratchpad, "dram_bytes_per_cycle": machine.dram_bytes_per_cycle},
        "total_cycles": cycles,
        "simulated_latency_ms": npu_ms,
        "macs": snap["macs"],
        "macs_issued": snap["macs_issued"],
        "mac_utilization": round(snap["macs"] / (cycles * peak_rate * cores), 4) if cycles else 0.0,
        "dma_bytes": snap["dma_bytes"],
        "scratchpad_peak_bytes": snap["peak_bytes"],
        "scratchpad_peak_fraction": {k: round(snap["peak_bytes"][k] / machine.scratchpad[k], 4) for k in SCRATCHPADS},
        "instructions": snap["instructions"],
        "errors": snap["errors"],
        "ops": ops,
        "host_fallback": {
            "kernels": [{"kernel": k, "calls": host_calls[k], "measured_ms": round(host_time.get(k, 0.0) * 1e3, 4)}
                        for k in sorted(host_calls)],
            "calls": n_host,
            "measured_ms": host_ms,
            "share_of_calls": round(n_host / (n_host + n_npu), 4) if n_host + n_npu else 0.0,
            "share_of_time": round(host_ms / (host_ms + npu_ms), 4) if host_ms + npu_ms else 0.0,
            "note": "host time is measured wall time on this machine; NPU time is simulated cycles at the clock",
        },
    }


def write_report(session, inputs: dict, path) -> dict:
    from ..runtime.manifest import write_bytes_atomic

    report = collect(session, inputs)
    path = Path(path)
    write_bytes_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
    html_path = path.with_suffix(".html")
    write_bytes_atomic(html_path, render_html(report).encode())
    print(f"npu-sim: {report['total_cycles']} cycles = {report['simulated_latency_ms']:.4f} ms at {report['machine']['clock_mhz']:.0f} MHz, "
          f"MAC utilization {report['mac_utilization']:.1%}, host share {report['host_fallback']['share_of_time']:.1%} of time; "
          f"wrote {path} and {html_path}")
    return report


def render_html(report: dict) -> str:
    """One self-contained page: summary, per-op bars, DMA and scratchpad tables."""
    esc = html.escape
    ops = sorted(report["ops"], key=lambda o: -o["cycles"])
    top = max([o["cycles"] for o in ops] or [1])
    rows = "".join(
        f"<tr><td>{esc(o['kernel'])}</td><td>{o['batch']}x{o['m']}x{o['n']}x{o['k']}</td><td>{o['cycles']:,}</td>"
        f"<td><div class=bar style='width:{300 * o['cycles'] / top:.0f}px'></div></td><td>{o['macs']:,}</td>"
        f"<td>{o['mac_utilization']:.1%}</td><td>{sum(o['dma_bytes'].values()):,}</td></tr>"
        for o in ops
    )
    host = "".join(f"<tr><td>{esc(h['kernel'])}</td><td>{h['calls']}</td><td>{h['measured_ms']:.3f}</td></tr>" for h in report["host_fallback"]["kernels"])
    dma = "".join(f"<tr><td>{esc(k)}</td><td>{v:,}</td></tr>" for k, v in report["dma_bytes"].items())
    peak = "".join(
        f"<tr><td>{esc(k)}</td><td>{v:,}</td><td>{report['machine']['scratchpad_bytes'][k]:,}</td><td>{report['scratchpad_peak_fraction'][k]:.0%}</td></tr>"
        for k, v in report["scratchpad_peak_bytes"].items()
    )
    hf = report["host_fallback"]
    return f"""<!doctype html><html><head><meta charset=utf-8><title>npu-sim report</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}} .bar{{height:10px;background:#3b7dd8}}</style></head><body>
<h1>npu-sim report</h1>
<p>model {esc(str(report['model']))}; {report['machine']['cores']} core(s) at {report['machine']['clock_mhz']:.0f} MHz</p>
<ul><li>total cycles: <b>{report['total_cycles']:,}</b> = {report['simulated_latency_ms']:.4f} ms simulated</li>
<li>MACs: {report['macs']:,} useful, {report['macs_issued']:,} issued (padding); MAC-array utilization <b>{report['mac_utilization']:.1%}</b></li>
<li>host fallback: {hf['calls']} calls, {hf['measured_ms']:.3f} ms measured; share {hf['share_of_calls']:.1%} of calls, {hf['share_of_time']:.1%} of time</li>
<li>simulator errors: {report['errors']}</li></ul>
<h2>NPU ops</h2><table><tr><th>kernel</th><th>BxMxNxK</th><th>cycles</th><th></th><th>MACs</th><th>util</th><th>DMA bytes</th></tr>{rows}</table>
<h2>DMA bytes</h2><table><tr><th>scratchpad</th><th>bytes</th></tr>{dma}</table>
<h2>Scratchpad peak use</h2><table><tr><th>scratchpad</th><th>peak</th><th>capacity</th><th>%</th></tr>{peak}</table>
<h2>Host fallback kernels</h2><table><tr><th>kernel</th><th>calls</th><th>ms</th></tr>{host}</table>
<p>{esc(hf['note'])}</p></body></html>
"""
