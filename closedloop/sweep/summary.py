"""``summary.html`` of a sweep: one self-contained page with figures, from ``results.csv``.

Per setting: how many recordings were scored and failed, the median (and interquartile range)
across recordings of the circular SD of the phase error, of its circular mean, PLV, share within
±45° and triggers per minute, ranked by the median circular SD. Figures: the circular SD, the
circular mean and the trigger rate of every recording under every setting; and a map of the
circular SD per recording and setting. Failed cells are listed with their errors.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path

import numpy as np

#: Recordings shown one by one in the per-recording map (the rest are counted).
MAP_MAX_RECORDINGS = 120
#: Failed cells listed by name.
MAX_FAILURES_LISTED = 100


def _horizontal() -> dict:
    """``boxplot`` keyword for horizontal boxes (``orientation`` from Matplotlib 3.10 on)."""
    import matplotlib

    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}td.num{text-align:right}"
    "img{max-width:100%}.note{color:#666}"
)


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _median_iqr(values: np.ndarray) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    if not v.size:
        return math.nan, math.nan, math.nan
    q1, q2, q3 = np.percentile(v, [25, 50, 75])
    return float(q2), float(q1), float(q3)


def collect(results: Path, plan) -> dict:
    """The per-cell numbers of ``results.csv`` arranged recordings x settings (NaN where none)."""
    n_rec, n_set = len(plan.recordings), len(plan.settings)
    shape = (n_rec, n_set)
    grid = {
        name: np.full(shape, np.nan)
        for name in (
            "circ_sd_deg",
            "circ_mean_deg",
            "plv",
            "within45",
            "rate_per_min",
            "n_triggers",
            "n_scored",
        )
    }
    failed = np.zeros(shape, dtype=bool)
    failures: list[tuple[str, str, str]] = []
    with open(results, newline="", encoding="utf-8") as fid:
        for row in csv.DictReader(fid):
            index = plan.index_of(row.get("cell", ""))
            if index is None:
                continue
            r, s = divmod(index, n_set)
            if row.get("error"):
                failed[r, s] = True
                if len(failures) < MAX_FAILURES_LISTED:
                    failures.append((row["recording"], plan.settings[s].label, row["error"]))
                continue
            for name, values in grid.items():
                values[r, s] = _float(row.get(name, ""))
    return {"grid": grid, "failed": failed, "failures": failures, "n_failed": int(failed.sum())}


def _short(path: str, n: int = 48) -> str:
    name = Path(path).name
    return name if len(name) <= n else name[: n - 3] + "..."


def _keys_title(plan) -> str:
    return " / ".join(plan.keys) if plan.keys else "setting"


def _figure_settings(data: dict, plan, order: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from closedloop.report import figure_png

    grid = data["grid"]
    labels = [s.short_label for s in plan.settings]
    n = len(order)
    fig, axes = plt.subplots(
        1, 3, figsize=(12, 1.6 + 0.34 * n), sharey=True, gridspec_kw={"width_ratios": [2, 1.4, 1.2]}
    )
    panels = (
        ("circ_sd_deg", "circular SD of the phase error (°)"),
        ("circ_mean_deg", "circular mean error (°)"),
        ("rate_per_min", "triggers per minute"),
    )
    rng = np.random.default_rng(0)
    for ax, (name, title) in zip(axes, panels):
        finite = [v[np.isfinite(v)] for v in (grid[name][:, s] for s in order)]
        if any(v.size for v in finite):
            ax.boxplot(
                [v if v.size else [np.nan] for v in finite],
                **_horizontal(),
                widths=0.6,
                showfliers=False,
                medianprops={"color": "tab:red"},
            )
        for y, v in enumerate(finite, start=1):
            ax.plot(v, y + rng.uniform(-0.18, 0.18, v.size), "o", ms=3, color="tab:blue", alpha=0.6)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        if name == "circ_mean_deg":
            ax.axvline(0.0, color="0.5", lw=0.8)
    axes[0].set_yticks(range(1, n + 1))
    axes[0].set_yticklabels([labels[s] for s in order], fontsize=8)
    axes[0].set_ylabel(_keys_title(plan), fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return figure_png(fig)


def _figure_map(data: dict, plan, order: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from closedloop.report import figure_png

    sd = data["grid"]["circ_sd_deg"][:MAP_MAX_RECORDINGS][:, order]
    failed = data["failed"][:MAP_MAX_RECORDINGS][:, order]
    labels = [plan.settings[s].short_label for s in order]
    names = [_short(r.path) for r in plan.recordings[:MAP_MAX_RECORDINGS]]
    n_rec, n_set = sd.shape
    longest = max((len(t) for t in labels), default=4)
    fig, ax = plt.subplots(
        figsize=(min(16.0, 4.0 + 0.8 * n_set), 1.4 + 0.3 * n_rec + 0.07 * longest)
    )
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="0.88")
    finite = sd[np.isfinite(sd)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(
        np.ma.masked_invalid(sd),
        aspect="auto",
        cmap=cmap,
        interpolation="nearest",
        vmin=low,
        vmax=max(high, low + 1e-6),
    )
    fig.colorbar(image, ax=ax, label="circular SD (°)", shrink=0.9, pad=0.02)
    if n_rec * n_set <= 600:
        for r in range(n_rec):
            for s in range(n_set):
                value = sd[r, s]
                if failed[r, s] or not math.isfinite(value):
                    text, colour = ("failed" if failed[r, s] else "-"), "0.3"
                else:
                    red, green, blue, _ = cmap((value - low) / max(high - low, 1e-6))
                    text = f"{value:.0f}"
                    colour = "black" if 0.3 * red + 0.6 * green + 0.1 * blue > 0.5 else "white"
                ax.text(s, r, text, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n_set))
    ax.set_xticklabels(
        labels,
        rotation=30 if longest > 8 else 0,
        ha="right" if longest > 8 else "center",
        fontsize=7,
    )
    ax.set_xlabel(_keys_title(plan), fontsize=8)
    ax.set_yticks(range(n_rec))
    ax.set_yticklabels(names, fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _fmt(value: float, spec: str = ".1f") -> str:
    return "n/a" if not math.isfinite(value) else format(value, spec)


def render(data: dict, plan, outcome, results: Path) -> str:
    """The page's HTML."""
    e = html.escape
    grid = data["grid"]
    labels = [s.label for s in plan.settings]
    medians = np.array([_median_iqr(grid["circ_sd_deg"][:, s])[0] for s in range(len(labels))])
    order = np.argsort(np.where(np.isfinite(medians), medians, np.inf), kind="stable")
    base = plan.protocol
    page_head = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>closedloop sweep</title>"
        f"<style>{_CSS}</style></head><body>"
    )
    intro = (
        f"<p>{len(plan.recordings)} recordings x {len(labels)} settings = {plan.n_cells} cells; "
        f"{data['n_failed']} failed. Last run: {outcome.n_run} cells on {e(outcome.backend)} in "
        f"{outcome.wall_s:.1f} s, {outcome.n_reused} kept from earlier runs. Every number is in "
        f"<code>{e(results.name)}</code>. Phase error = true phase at the delivery time (zero-phase "
        "band-pass and Hilbert transform of the whole recording) minus the target, for the triggers "
        "after the baseline.</p>"
    )
    table_head = (
        "<table><tr><th>#</th><th>setting</th><th>recordings scored</th><th>failed</th>"
        "<th>circular SD ° median [IQR]</th><th>circular mean °</th><th>PLV</th><th>within ±45°</th>"
        "<th>triggers/min</th><th>triggers</th></tr>"
    )
    parts = [
        page_head,
        f"<h1>closedloop sweep: {e(getattr(base, 'name', ''))}</h1>",
        intro,
        "<h2>Settings, best first</h2>",
        table_head,
    ]
    for rank, s in enumerate(order, start=1):
        sd, q1, q3 = _median_iqr(grid["circ_sd_deg"][:, s])
        scored = int(np.sum(grid["n_scored"][:, s] > 0))
        total = grid["n_triggers"][:, s]
        parts.append(
            f"<tr><td class='num'>{rank}</td><td>{e(labels[s])}</td><td class='num'>{scored}</td>"
            f"<td class='num'>{int(data['failed'][:, s].sum())}</td>"
            f"<td class='num'>{_fmt(sd)} [{_fmt(q1)}, {_fmt(q3)}]</td>"
            f"<td class='num'>{_fmt(_median_iqr(grid['circ_mean_deg'][:, s])[0])}</td>"
            f"<td class='num'>{_fmt(_median_iqr(grid['plv'][:, s])[0], '.2f')}</td>"
            f"<td class='num'>{_fmt(_median_iqr(grid['within45'][:, s])[0], '.2f')}</td>"
            f"<td class='num'>{_fmt(_median_iqr(grid['rate_per_min'][:, s])[0])}</td>"
            f"<td class='num'>{int(np.nansum(total))}</td></tr>"
        )
    parts.append(
        "</table><p class='note'>Medians across recordings; a recording counts as scored "
        "when at least one of its triggers fell in the scored span.</p>"
    )
    if len(labels):
        across = (
            "Each point is one recording under that setting; boxes span the quartiles, red lines "
            "are medians. Settings in the order of the table."
        )
        per_recording = (
            "Circular SD of the phase error of each recording (rows, in the order found) under each "
            "setting (columns, best first); grey where nothing was scored."
        )
        if len(plan.recordings) > MAP_MAX_RECORDINGS:
            per_recording += (
                f" The first {MAP_MAX_RECORDINGS} of {len(plan.recordings)} recordings."
            )
        figures = (
            ("settings", "Across recordings", across, _figure_settings(data, plan, order)),
            ("recordings", "Per recording", per_recording, _figure_map(data, plan, order)),
        )
        for key, title, caption, png in figures:
            encoded = base64.b64encode(png).decode("ascii")
            parts.append(
                f"<h2>{e(title)}</h2><p>{e(caption)}</p>"
                f"<img id='fig-{key}' alt='{e(title)}' src='data:image/png;base64,{encoded}'>"
            )
    if data["failures"]:
        parts.append(
            "<h2>Failed cells</h2><table><tr><th>recording</th><th>setting</th><th>error</th></tr>"
        )
        for path, label, error in data["failures"]:
            parts.append(f"<tr><td>{e(path)}</td><td>{e(label)}</td><td>{e(error)}</td></tr>")
        parts.append("</table>")
        if data["n_failed"] > len(data["failures"]):
            parts.append(
                f"<p class='note'>{data['n_failed'] - len(data['failures'])} more in results.csv.</p>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_summary(results: Path, path: Path, *, plan, outcome) -> Path:
    """Write ``path`` (HTML) from ``results``; returns ``path``."""
    data = collect(results, plan)
    path.write_text(render(data, plan, outcome, results), encoding="utf-8")
    return path
