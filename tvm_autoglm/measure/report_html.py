"""Self-contained HTML reports (inline SVG + a few lines of inline JS) and PNG charts.

One file, no CDN, no fonts to fetch: the report is opened on build machines
and attached to tickets where nothing can be downloaded. The chart is an
inline SVG of horizontal bars sorted by time; the table below it holds full
kernel names (the chart truncates them; hover shows the full name) and sorts
on a header click.
"""

from __future__ import annotations

import html
import json
import math

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;max-width:1200px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .meta{color:#555;font-size:13px;margin:2px 0}
table{border-collapse:collapse;font-size:13px;margin-top:8px} th,td{padding:4px 10px;border-bottom:1px solid #e3e6ec;text-align:right}
th{cursor:pointer;background:#f4f6fa;position:sticky;top:0} td.name,th.name{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all;max-width:560px}
tr.best td{background:#e8f6ec;font-weight:600} tr.miss td{color:#999} .note{color:#8a5a00;font-size:13px}
svg text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v !== undefined ? parseFloat(a.cells[col].dataset.v) : a.cells[col].textContent;
      var y = b.cells[col].dataset.v !== undefined ? parseFloat(b.cells[col].dataset.v) : b.cells[col].textContent;
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
document.body.dataset.ready = '1';
"""

_PALETTE = {"kernel": "#3b6fd8", "builtin": "#9aa5b8", "overhead": "#c7ccd6", "best": "#2e9e5b", "miss": "#d9dce3"}


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def bar_chart_svg(items: list[tuple[str, float, str]], unit: str = "ms", width: int = 900, label_chars: int = 48) -> str:
    """Horizontal bars, largest first: ``items`` = [(label, value, color key)]."""
    items = sorted(items, key=lambda it: it[1], reverse=True)
    bar_h, gap = 18, 6
    label_w = 7 * min(label_chars, max([len(i[0]) for i in items] + [4])) + 12
    value_w = 7 * (len(unit) + 12)  # room for "123.456 unit" after the longest bar
    plot_w = max(120, width - label_w - value_w)
    top = max([v for _, v, _ in items if math.isfinite(v)] + [1e-12])
    height = len(items) * (bar_h + gap) + gap
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for i, (label, value, color) in enumerate(items):
        y = gap + i * (bar_h + gap)
        shown = label if len(label) <= label_chars else label[: label_chars - 1] + "\u2026"
        w = 0 if not math.isfinite(value) else max(1.0, plot_w * value / top)
        parts.append(
            f'<g><title>{_esc(label)}: {value:.4g} {unit}</title>'
            f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">{_esc(shown)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{_PALETTE.get(color, color)}" rx="2"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h - 5}">{value:.3f} {unit}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def table_html(headers: list[str], rows: list[list], name_col: int = 0, row_classes: list[str] | None = None) -> str:
    """A sortable table; numeric cells carry ``data-v`` so sorting is numeric."""
    head = "".join(f'<th class="name">{_esc(h)}</th>' if i == name_col else f"<th>{_esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            if isinstance(cell, tuple):  # (display text, numeric sort key)
                text, key = cell
                key_attr = f' data-v="{key}"' if key is not None and math.isfinite(key) else ' data-v="-1"'
                cells.append(f"<td{key_attr}>{_esc(text)}</td>")
            elif i == name_col:
                cells.append(f'<td class="name">{_esc(cell)}</td>')
            else:
                cells.append(f"<td>{_esc(cell)}</td>")
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def page(title: str, meta_lines: list[str], sections: list[tuple[str, str]], data: dict | None = None) -> str:
    meta = "".join(f'<p class="meta">{_esc(line)}</p>' for line in meta_lines)
    body = "".join(f"<h2>{_esc(h)}</h2>{content}" for h, content in sections)
    blob = ""
    if data is not None:  # machine-readable copy of the numbers, inert (not executed)
        text = json.dumps(data, default=str).replace("</", "<\\/")
        blob = f'<script type="application/json" id="report-data">{text}</script>'
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1>{meta}{body}{blob}<script>{_SORT_JS}</script></body></html>"
    )


def _fmt(value, spec: str, dash: str = "-"):
    return (format(value, spec), value) if value is not None and math.isfinite(value) else (dash, None)


def profile_html(profile, machine_line: str | None = None) -> str:
    rows, classes = [], []
    for r in profile.rows:
        rows.append(
            [
                r.name,
                (str(r.calls), r.calls),
                _fmt(r.ms, ".3f"),
                (f"{100 * r.share:.1f}%", r.share),
                _fmt(r.flops / 1e6 if r.flops else None, ".2f"),
                _fmt(r.gflops, ".2f"),
                _fmt(100 * r.peak_fraction if r.peak_fraction is not None else None, ".1f"),
            ]
        )
        classes.append("" if r.kind == "kernel" else "miss")
    meta = [f"binary: {profile.binary}"] if profile.binary else []
    meta.append(
        f"total {profile.total_ms:.3f} ms per inference with the instrument hook, {profile.plain_ms:.3f} ms without; "
        f"{profile.runs - profile.topped_up} clean runs, {profile.dropped} dropped (threads waited for a CPU)"
    )
    if machine_line:
        meta.append(machine_line)
    if profile.peak:
        meta.append(f"measured fp32 peak {profile.peak['gflops']:.1f} GFLOP/s with {profile.peak['threads']} threads ({profile.peak['method']})")
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in profile.notes)
    chart = bar_chart_svg([(r.name, r.ms, r.kind) for r in profile.rows])
    table = table_html(["kernel", "calls", "ms / inference", "share", "MFLOP", "GFLOP/s", "% of peak"], rows, row_classes=classes)
    return page("auto-glm profile: time per kernel", meta, [("Time per kernel (sorted)", chart + notes), ("Kernels", table)], data=profile.to_json())


def sweep_html(result, machine_line: str | None = None) -> str:
    best = result.best
    rows, classes, items = [], [], []
    for p in result.points:
        label = p.label
        rows.append(
            [
                label,
                (str(p.batch), p.batch),
                (str(p.seq) if p.seq is not None else "-", p.seq or 0),
                _fmt(p.median_ms, ".3f"),
                _fmt(p.p90_ms, ".3f"),
                _fmt(p.throughput, ".1f"),
                ("yes" if p.meets_slo else "no", 1 if p.meets_slo else 0),
            ]
        )
        classes.append("best" if best is not None and p is best else ("" if p.meets_slo else "miss"))
        items.append((label, p.throughput if p.throughput is not None else float("nan"), "best" if p is best else ("kernel" if p.meets_slo else "miss")))
    meta = [f"model: {result.model}", f"SLO: p90 latency <= {result.slo_ms} ms" if result.slo_ms else "no SLO: best = max throughput"]
    if machine_line:
        meta.append(machine_line)
    meta.append(f"best under the SLO: {best.label} ({best.throughput:.1f} samples/s, p90 {best.p90_ms:.3f} ms)" if best else "no configuration meets the SLO")
    chart = bar_chart_svg(items, unit="samples/s", label_chars=24)
    table = table_html(["config", "batch", "seq", "median ms", "p90 ms", "samples/s", "meets SLO"], rows, row_classes=classes)
    return page("auto-glm sweep: batch x sequence", meta, [("Throughput per configuration", chart), ("Latency and throughput", table)], data=result.to_json())


def _pyplot():
    """matplotlib's pyplot on the Agg backend (PNG output needs no display); a one-line error without the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        from ..errors import AutoGLMError

        raise AutoGLMError("--png needs matplotlib", hint="pip install -e '.[plots]'") from err
    return plt


def _short_labels(labels: list[str]) -> list[str]:
    return [lab if len(lab) <= 50 else lab[:49] + "\u2026" for lab in labels]


def bar_png(path, labels: list[str], values: list[float], xlabel: str, title: str, highlight: int | None = None) -> None:
    """A horizontal bar PNG (matplotlib, Agg) for terminals and READMEs."""
    plt = _pyplot()
    short = _short_labels(labels)
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(labels) + 1.2))
    colors = ["#2e9e5b" if i == highlight else "#3b6fd8" for i in range(len(values))]
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), short, fontsize=8, family="monospace")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kernel_ab_html(result, machine_line: str | None = None) -> str:
    """``auto-glm ab --per-kernel``: A and B bars per kernel and a sortable A / B / B÷A table."""
    items, rows, classes = [], [], []
    for p in result.pairs:
        if p.a_ms is not None:
            items.append((f"A {p.name}", p.a_ms, "builtin"))
        if p.b_ms is not None:
            items.append((f"B {p.name}", p.b_ms, "kernel"))
        rows.append([p.name, _fmt(p.a_ms, ".3f"), _fmt(p.b_ms, ".3f"), _fmt(p.ratio, ".3f"), p.side])
        classes.append("best" if p.ratio is not None and p.ratio < 1 else ("miss" if p.side != "both" else ""))
    total_ratio = result.total_b_ms / result.total_a_ms if result.total_a_ms > 0 else None
    meta = [f"A: {result.a}", f"B: {result.b}",
            f"median over {result.rounds} interleaved rounds; all kernels A {result.total_a_ms:.3f} ms, B {result.total_b_ms:.3f} ms"
            + (f" (B/A {total_ratio:.3f})" if total_ratio is not None else "")]
    if machine_line:
        meta.append(machine_line)
    chart = bar_chart_svg(items)
    table = table_html(["kernel", "A ms", "B ms", "B/A", "in"], rows, row_classes=classes)
    return page("auto-glm ab --per-kernel", meta, [("Time per kernel, A and B", chart), ("Kernels", table)], data=result.to_json())


def paired_bar_png(path, labels: list[str], a_values: list, b_values: list, xlabel: str, title: str) -> None:
    """Two bars (A, B) per label; a missing value (None) draws no bar."""
    plt = _pyplot()
    short = _short_labels(labels)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(labels) + 1.4))
    ys = list(range(len(labels)))
    ax.barh([y - 0.2 for y in ys], [v or 0.0 for v in a_values], height=0.4, color="#9aa5b8", label="A")
    ax.barh([y + 0.2 for y in ys], [v or 0.0 for v in b_values], height=0.4, color="#3b6fd8", label="B")
    ax.set_yticks(ys, short, fontsize=8, family="monospace")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
