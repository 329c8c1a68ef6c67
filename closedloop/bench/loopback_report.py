"""The HTML report of ``closedloop bench loopback --report FILE.html``: one self-contained page.

The figures (matplotlib PNGs, embedded as base64): the delay histogram, the delay of every pulse
over the session with the missed pulses and the extra edges marked, and with a signal channel the
phase rose (true phase at the edges against the target).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from closedloop.errors import UsageError

__all__ = ["render_report", "write_report"]

#: Rows of the per-pulse table shown at most (the JSON holds them all).
MAX_TABLE_ROWS = 2000
#: Bins of the phase rose, degrees.
ROSE_BIN_DEG = 15.0

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 64em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.problem { background: #fde8e8; border-left: 4px solid #c44e52; padding: 0.6em 1em; }
.note { color: #555; }
img { max-width: 100%; }
"""


def _png(fig) -> str:
    from closedloop.report import figure_png

    return base64.b64encode(figure_png(fig)).decode("ascii")


def _delays(result: dict) -> np.ndarray:
    return np.asarray([r["delay_ms"] for r in result["pulses"] if r["delay_ms"] is not None], dtype=float)


def figure_histogram(result: dict) -> str:
    """Histogram of the loop-back delays with p50 and p99 marked (a PNG, base64)."""
    import matplotlib.pyplot as plt

    d = _delays(result)
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    if d.size:
        step = result["sample_step_ms"]
        width = max(step / 8, (d.max() - d.min()) / 60, 0.01)
        bins = np.arange(d.min() - width, d.max() + 2 * width, width)
        ax.hist(d, bins=bins, color="#4c72b0", alpha=0.85)
        stats = result["delay_ms"]
        for key, colour in (("p50", "#222222"), ("p99", "#c44e52")):
            ax.axvline(stats[key], color=colour, lw=1.5, ls="--", label=f"{key} {stats[key]:.3f} ms")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no pulse was found in the trigger channel", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("edge time - planned delivery time (ms)")
    ax.set_ylabel("pulses")
    ax.set_title(f"loop-back delay (n = {d.size}; sampling step {result['sample_step_ms']:.3g} ms)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def figure_timeline(result: dict) -> str:
    """Delay of each pulse over the session; missed pulses and extra edges marked (PNG, base64)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    found = [r for r in result["pulses"] if r["status"] == "found"]
    late = [r for r in result["pulses"] if r["status"] == "late"]
    missed = [r for r in result["pulses"] if r["status"] == "missed"]
    if found:
        ax.plot([r["planned_s"] for r in found], [r["delay_ms"] for r in found], "o", ms=3.5,
                color="#4c72b0", label=f"found ({len(found)})")
    if late:
        ax.plot([r["planned_s"] for r in late], [r["delay_ms"] for r in late], "o", ms=4.5,
                color="#8172b3", label=f"late, after the window ({len(late)})")
    y_low = min([r["delay_ms"] for r in found + late], default=0.0)
    y_high = max([r["delay_ms"] for r in found + late], default=1.0)
    if missed:
        ax.plot([r["planned_s"] for r in missed], [y_low] * len(missed), "x", color="#c44e52", ms=7,
                label=f"missed ({len(missed)})")
    for i, e in enumerate(result["extra_edges"]):
        ax.axvline(e["edge_s"], color="#dd8452", lw=1, alpha=0.8,
                   label=f"extra edge ({len(result['extra_edges'])})" if i == 0 else None)
    pad = max(0.1, 0.1 * (y_high - y_low))
    ax.set_ylim(y_low - pad, y_high + pad)
    ax.set_xlabel("time from the first sample (s)")
    ax.set_ylabel("delay (ms)")
    ax.set_title("delay of each pulse over the session", fontsize=10)
    if found or late or missed or result["extra_edges"]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png(fig)


def figure_rose(result: dict) -> str:
    """Phase rose: the true phase at each edge, the target and the mean vector (PNG, base64)."""
    import matplotlib.pyplot as plt

    phase = result["phase"]
    true = np.asarray([r["true_phase_deg"] for r in result["pulses"] if r["true_phase_deg"] is not None], dtype=float)
    fig = plt.figure(figsize=(4.6, 4.8))
    ax = fig.add_subplot(projection="polar")
    edges = np.radians(np.arange(-180.0, 180.0 + ROSE_BIN_DEG, ROSE_BIN_DEG))
    counts, _ = np.histogram(np.radians(true), bins=edges)
    width = np.radians(ROSE_BIN_DEG)
    ax.bar(edges[:-1] + width / 2, counts, width=width, color="#55a868", edgecolor="white", alpha=0.85)
    top = max(1, int(counts.max()) if counts.size else 1)
    if phase.get("target_deg") is not None:
        ax.plot([math.radians(phase["target_deg"])] * 2, [0, top], color="#c44e52", lw=2, label="target")
    if true.size:
        vec = np.mean(np.exp(1j * np.radians(true)))
        ax.annotate("", xy=(np.angle(vec), abs(vec) * top), xytext=(0, 0),
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 2})
    ax.set_theta_zero_location("N")
    ax.set_xticks(np.radians([0, 90, 180, 270]))
    ax.set_xticklabels(["0 peak", "90", "180 trough", "-90"])
    ax.tick_params(axis="y", labelsize=7)

    def f(v, spec):
        return "n/a" if v is None or not math.isfinite(v) else format(v, spec)

    ax.set_title(f"true phase at the edges, {phase['channel']} (n = {phase['n']})\nerror vs target: mean "
                 f"{f(phase['circ_mean_deg'], '+.1f')}°, SD {f(phase['circ_sd_deg'], '.1f')}°", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _fmt(value, spec: str = ".3f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    return format(value, spec)


def _ci(pair) -> str:
    if not pair or any(v is None or not math.isfinite(v) for v in pair):
        return ""
    return f" [{pair[0]:.3f}, {pair[1]:.3f}]"


def summary_rows(result: dict) -> list[tuple[str, str]]:
    """The figures as (label, text) rows: the stdout table and the report's summary share them."""
    d = result["delay_ms"]
    rows = [
        ("pulses", f"{result['n_planned']} planned, {result['n_sent']} sent, {result['n_found']} found "
                   f"({result['n_missed']} missed, {result['n_extra']} extra edges, {result['n_late']} late"
                   + (f", {result['n_unchecked']} too close to the end to check" if result["n_unchecked"] else "")
                   + ")"),
        ("delay p50 [95 % CI]", f"{_fmt(d['p50'])}{_ci(d.get('ci95_p50'))} ms"),
        ("delay p95 [95 % CI]", f"{_fmt(d['p95'])}{_ci(d.get('ci95_p95'))} ms"),
        ("delay p99 [95 % CI]", f"{_fmt(d['p99'])}{_ci(d.get('ci95_p99'))} ms"),
        ("delay min / max", f"{_fmt(d['min'])} / {_fmt(d['max'])} ms"),
        ("delay jitter", f"SD {_fmt(d['sd'])} ms, 95 % within ±{_fmt(d.get('jitter_p95_abs_ms'))} ms of the median"),
        ("delivery (write - plan)",
         f"p50 {_fmt(result['delivery_ms']['p50'])} ms, max {_fmt(result['delivery_ms']['max'])} ms"),
        ("transit (edge - write)",
         f"p50 {_fmt(result['transit_ms']['p50'])} ms, max {_fmt(result['transit_ms']['max'])} ms"),
        ("sampling step", f"{result['sample_step_ms']:.3g} ms (edges are up to one step late, half on average)"),
    ]
    phase = result.get("phase")
    if phase is not None:
        text = (f"error vs target: circular mean {_fmt(phase['circ_mean_deg'], '+.1f')}°, SD "
                f"{_fmt(phase['circ_sd_deg'], '.1f')}°, n {phase['n']} ({phase['channel']}, "
                f"{phase['band_hz'][0]:g}-{phase['band_hz'][1]:g} Hz)")
        rows.append(("phase at the edges", text))
    if result.get("suggested_technical_delay_s") is not None:
        text = (f"{result['suggested_technical_delay_s']:.5f} s would centre the pulses on the target "
                "([trigger] technical_delay_s)")
        rows.append(("technical_delay_s", text))
    return rows


def render_report(result: dict) -> str:
    """The report as one HTML document (figures embedded)."""
    e = html.escape
    s = result["stream"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>closedloop loop-back qualification</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Loop-back timing qualification</h1>",
        (f"<p>Protocol <b>{e(str(result.get('protocol', '?')))}</b>; input stream <code>{e(s['name'])}</code> "
         f"(source_id <code>{e(s['source_id'])}</code>, {s['sfreq']:g} Hz, fitted {s['rate_fitted_hz']:.4f} Hz, "
         f"{s['duration_s']:.1f} s); trigger channel <code>{e(result['trigger_channel'])}</code> "
         f"({e(result['edge_rule'])}); recording "
         + (f"<code>{e(result['recording'])}</code>.</p>" if result.get("recording") else "not kept.</p>")),
    ]
    if result.get("problem"):
        parts.append(f"<p class='problem' id='problem'>{e(result['problem'])}</p>")
    parts.append("<h2>Summary</h2><table id='summary'>")
    for label, text in summary_rows(result):
        parts.append(f"<tr><th>{e(label)}</th><td>{e(text)}</td></tr>")
    parts.append("</table>")
    parts.append(
        "<p class='note'>Delay = the edge's time on the amplifier's sample clock minus the planned delivery time. "
        "Delivery = the moment the TTL code byte was written minus the plan; transit = the edge minus that "
        "moment (TTL box, cable, amplifier, its time stamps). Confidence intervals: bootstrap, "
        f"{result['settings']['bootstrap']['n']} resamples, seed {result['settings']['bootstrap']['seed']}.</p>")
    figures = [("delay", "Delay histogram", figure_histogram(result)),
               ("timeline", "Delay over the session", figure_timeline(result))]
    if result.get("phase") is not None:
        figures.append(("rose", "Phase at the edges", figure_rose(result)))
    for key, title, png in figures:
        parts.append(f"<h2>{e(title)}</h2><img id='fig-{key}' alt='{e(title)}' src='data:image/png;base64,{png}'>")
    parts.append("<h2>Pulses</h2><table id='pulses'><tr><th>seq</th><th>pulse</th><th>event</th>"
                 "<th>planned (s)</th><th>edge (s)</th><th>delay (ms)</th><th>delivery (ms)</th>"
                 "<th>transit (ms)</th><th>true phase (°)</th><th>status</th></tr>")
    for r in result["pulses"][:MAX_TABLE_ROWS]:
        cells = [str(r["seq"]), str(r["pulse"] + 1), e(r["event"]), _fmt(r["planned_s"], ".4f"),
                 _fmt(r["edge_s"], ".4f"), _fmt(r["delay_ms"]), _fmt(r["delivery_ms"]), _fmt(r["transit_ms"]),
                 _fmt(r["true_phase_deg"], "+.1f"), e(r["status"])]
        parts.append("<tr>" + "".join(f"<td class='num'>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    if len(result["pulses"]) > MAX_TABLE_ROWS:
        parts.append(f"<p class='note'>The first {MAX_TABLE_ROWS} of {len(result['pulses'])} pulses; the JSON "
                     "(--json) holds them all.</p>")
    if result["extra_edges"]:
        parts.append("<h2>Extra edges</h2><table id='extra'><tr><th>time (s)</th><th>level</th>"
                     "<th>nearest pulse (seq)</th><th>from its plan (ms)</th></tr>")
        for x in result["extra_edges"][:MAX_TABLE_ROWS]:
            parts.append(f"<tr><td class='num'>{x['edge_s']:.4f}</td><td class='num'>{x['edge_level']:g}</td>"
                         f"<td class='num'>{_fmt(x['nearest_seq'])}</td><td class='num'>{_fmt(x['from_nearest_ms'], '+.1f')}"
                         "</td></tr>")
        parts.append("</table>")
    if result.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in result["notes"]) + "</ul>")
    machine = result.get("machine")
    if machine:
        versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
        parts.append(f"<p class='note'>{e(machine.get('cpu_model', ''))}, {machine.get('usable_cores')} cores; "
                     f"{e(versions)}; {e(machine.get('date_utc', ''))}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, result: dict) -> Path:
    """Write the report to ``path`` (an .html file in an existing folder)."""
    import matplotlib

    matplotlib.use("Agg")
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--report must name an .html file, got {str(path)!r}.")
    if not path.parent.is_dir():
        raise UsageError(f"the folder of --report, {str(path.parent)!r}, does not exist; create it first.")
    try:
        path.write_text(render_report(result), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write --report {str(path)!r}: {exc.strerror or exc}.") from exc
    return path
