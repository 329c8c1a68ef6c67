"""Live terminal monitor for ``closedloop run --monitor``.

A :class:`Monitor` redraws a small rich table on stderr a few times a second from its own
thread: the input stream (rate, drops, gaps, stalls), the loop latency over the last seconds,
band amplitude and phase, gate and hold state, triggers delivered and dropped, and the
feedback value. It only reads: each refresh copies a handful of numbers from the session
(``session.stats``, ``session.engine.counters``, ``session.stats.last_state``) and a slice of the
newest latencies, and computes everything else on those copies. It takes no lock the loop
could wait on, so the loop never waits for the display.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np

#: Redraws per second.
REFRESH_HZ = 4.0
#: Rates and latency percentiles cover this many seconds.
WINDOW_S = 5.0
#: At most this many of the newest latencies enter the percentiles.
MAX_LATENCIES = 5000


def _clock() -> float:
    return time.monotonic()


def _lsl_clock() -> float:
    import pylsl

    return pylsl.local_clock()


class Monitor:
    """A live display of one :class:`closedloop.live.LiveSession`, refreshed on its own thread.

    Parameters
    ----------
    session : LiveSession
        The running session (``stats``, ``engine``, ``source``, ``protocol``).
    refresh_hz : float
        Redraws per second.
    window_s : float
        Seconds covered by the input rate and the latency percentiles.
    console : rich.console.Console, optional
        Where to draw; default a console on stderr.
    """

    def __init__(self, session, *, refresh_hz: float = REFRESH_HZ, window_s: float = WINDOW_S,
                 console=None) -> None:
        if not (refresh_hz > 0 and math.isfinite(refresh_hz)):
            raise ValueError(f"refresh_hz must be a positive number, got {refresh_hz!r}.")
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}.")
        self.session = session
        self.refresh_s = 1.0 / refresh_hz
        self.window_s = float(window_s)
        self.console = console
        self.frames = 0
        self.snapshot_s: list[float] = []  # time each refresh spent reading and computing
        self._history: deque[tuple[float, int, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict:
        """The figures shown, read from the session now (small copies only)."""
        session = self.session
        stats = session.stats
        engine = session.engine
        counters = engine.counters
        now = _clock()
        samples, chunks = stats.samples, stats.chunks
        history = self._history
        history.append((now, samples, chunks))
        while len(history) > 2 and now - history[1][0] >= self.window_s:
            history.popleft()
        t0, s0, c0 = history[0]
        span = now - t0
        rate = (samples - s0) / span if span > 0 else math.nan
        recent = min(max(chunks - c0, 1), MAX_LATENCIES)
        latencies = np.asarray(stats.latency_s[-recent:], dtype=float) * 1e3
        state = stats.last_state
        hold_until = getattr(engine, "hold_until", -math.inf)
        sample_ts = getattr(state, "sample_ts", math.nan)
        started = stats.started
        source = session.source
        return {
            "stream": getattr(getattr(source, "layout", None), "name", "?"),
            "nominal_hz": float(getattr(source, "sfreq", math.nan)),
            "rate_hz": rate,
            "samples": samples,
            "chunks": chunks,
            "missing_samples": counters.n_missing_samples,
            "gaps": counters.n_gaps,
            "bad_samples": counters.n_bad_samples,
            "stalls": stats.stalls,
            "stalled": stats.stalled,
            "latency_n": int(latencies.size),
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies.size else math.nan,
            "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies.size else math.nan,
            "phase_deg": float(getattr(state, "phase_deg", math.nan)),
            "amplitude": float(getattr(state, "amplitude", math.nan)),
            "feedback": float(getattr(state, "feedback", math.nan)),
            "gate": bool(getattr(state, "gate", False)),
            "hold": bool(sample_ts < hold_until),
            "baseline_done": bool(engine.baseline_done),
            "gate_threshold_uv": float(engine.gate_threshold),
            "triggers": stats.triggers,
            "triggers_dropped": sum(dict(counters.dropped).values()),
            "kind": session.protocol.kind,
            "elapsed_s": _lsl_clock() - started if started else 0.0,
        }

    # ------------------------------------------------------------------ drawing
    def render(self, snap: dict):
        """A rich renderable of one snapshot."""
        from rich.panel import Panel
        from rich.table import Table

        def num(value: float, spec: str, unit: str = "") -> str:
            return "n/a" if value is None or not math.isfinite(value) else f"{value:{spec}}{unit}"

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        stream = (
            f"{snap['stream']}  rate {num(snap['rate_hz'], '.1f')} Hz (nominal {num(snap['nominal_hz'], 'g')} Hz)"
            f"  samples {snap['samples']}  dropped {snap['missing_samples']} in {snap['gaps']} gap(s)"
            f"  stalls {snap['stalls']}"
        )
        if snap["stalled"]:
            stream += "  [bold red]STALLED[/]"
        table.add_row("stream", stream)
        table.add_row(
            "latency",
            f"p50 {num(snap['latency_p50_ms'], '.2f', ' ms')}  p99 {num(snap['latency_p99_ms'], '.2f', ' ms')}"
            f"  (last {self.window_s:g} s, {snap['latency_n']} chunks)",
        )
        table.add_row(
            "signal",
            f"amplitude {num(snap['amplitude'], '.1f', ' µV')}  phase {num(snap['phase_deg'], '+.0f', '°')}",
        )
        if not snap["baseline_done"]:
            gate = "[yellow]baseline[/] (collecting)"
        elif snap["kind"] == "feedback":
            gate = "feedback protocol (no triggers)"
        else:
            gate = "[green]open[/]" if snap["gate"] else "[red]closed[/]"
            gate += f"  hold {'[red]yes[/]' if snap['hold'] else 'no'}"
            gate += f"  threshold {num(snap['gate_threshold_uv'], '.1f', ' µV')}"
        table.add_row("gate", gate)
        table.add_row("triggers", f"delivered {snap['triggers']}  dropped {snap['triggers_dropped']}")
        table.add_row("feedback", num(snap["feedback"], "+.3f"))
        title = f"closedloop run: {self.session.protocol.name}  {snap['elapsed_s']:.1f} s"
        return Panel(table, title=title, expand=False)

    # ------------------------------------------------------------------ thread
    def start(self) -> Monitor:
        """Start drawing (returns self)."""
        from rich.console import Console
        from rich.live import Live

        if self._thread is not None:
            return self
        console = self.console if self.console is not None else Console(stderr=True)
        self._live = Live(self.render(self.snapshot()), console=console, auto_refresh=False,
                          transient=False)
        self._live.start()
        self._thread = threading.Thread(target=self._run, name="closedloop-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from closedloop import realtime

        realtime.background()  # below a real-time loop
        next_at = _clock()
        while not self._stop.wait(max(0.0, next_at - _clock())):
            next_at += self.refresh_s
            t = time.perf_counter()
            snap = self.snapshot()
            self.snapshot_s.append(time.perf_counter() - t)
            self._live.update(self.render(snap), refresh=True)
            self.frames += 1

    def stop(self) -> None:
        """Draw the final figures and stop."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self._live.update(self.render(self.snapshot()), refresh=True)
        self._live.stop()
