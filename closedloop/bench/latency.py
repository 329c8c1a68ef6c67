"""``closedloop bench latency``: push-to-receipt latency of the live loop, measured from outside.

An amplifier outlet in this process pushes simulated EEG in real time (default 64 channels at
5 kHz in chunks of 5); ``closedloop run`` with the default phase protocol runs as a separate
process; inlets here receive its State and Markers streams. For every State sample, latency is
its receipt time here minus the push time of the input chunk holding the newest sample it reports
(matched by ``sample_ts``). Trigger delivery precision is each marker's LSL timestamp (the moment
of delivery) against the ``scheduled_ts`` in its JSON. Dropped samples come from the run's own
summary; CPU use is the engine process's user+system time over wall time (psutil).

``--ui`` then runs the engine again in the same invocation, as ``closedloop run --ui``, with its
operator's and participant's pages open in headless Chromium (Debian's, through selenium), and
reports that run's latency beside the first: the cost of the browser views to the loop, measured
from a second after the pages were open to the end (the run lasts ``UI_OPEN_S`` longer, the time
the browser is given to open them; the browser itself is started before the first run).

``--compare mne-lsl`` then runs, against the same outlet, a pipeline built on mne-lsl's
``StreamLSL`` (``acquisition_delay=0.001``, ``filter(8, 13)``, ``get_data``, phase of the last
sample by the Hilbert transform of the latest window) in its own process, publishing a State
sample per new chunk, measured the same way. The worker is this module run as a script
(``python -m closedloop.bench.latency mne-lsl-worker ...``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_CHANNELS = 64
DEFAULT_SFREQ = 5000.0
DEFAULT_CHUNK = 5
DEFAULT_DURATION_S = 30.0
#: The --ui run lasts this much longer than --duration: the browser opens the pages meanwhile.
UI_OPEN_S = 12.0
#: Window the mne-lsl pipeline takes the Hilbert transform of.
MNE_LSL_WINDOW_S = 0.5
#: The targets of the live-loop issue, shown next to the figures.
TARGETS = {"latency_p50_ms": 0.35, "latency_p99_ms": 1.0, "delivery_p99_ms": 0.2, "cpu_percent": 50.0,
           "ratio_mne_lsl": 3.0, "monitor_p99_cost_ms": 0.1, "ui_p99_cost_ms": 0.1}


def run_latency(settings: dict, *, progress: bool = True) -> dict:
    """Run the benchmark with ``settings`` (see :func:`configure_parser`) and return its figures."""
    from closedloop.bench import common

    common.start_lsl()
    from closedloop.protocol import load_protocol

    protocol = load_protocol(settings["protocol"])  # a bad protocol fails here, not in the child
    realtime = bool(settings.get("realtime", False))
    bench_rt = common.bench_realtime(realtime)
    n_ch, sfreq, cs, duration = settings["channels"], settings["sfreq"], settings["chunk_size"], settings["duration_s"]
    n_runs = 1 + bool(settings["compare"]) + 2 * bool(settings.get("ui"))  # the ui run is longer
    block, labels = common.amplifier_block(n_ch, sfreq, cs)
    amp_id = common.fresh_id("eeg")
    amp = common.Amplifier(
        block, labels, sfreq, cs, source_id=amp_id, name=amp_id,
        capacity_s=n_runs * (duration + common.ENGINE_START_TIMEOUT_S + 30.0), stamping=settings["stamping"],
    ).start()
    state_capacity = int((duration + common.ENGINE_START_TIMEOUT_S) * sfreq / cs) + 1000
    workdir = Path(tempfile.mkdtemp(prefix="closedloop-bench-latency-"))
    result: dict = {"benchmark": "latency", "settings": dict(settings), "targets": TARGETS}
    browser = None
    try:
        if settings.get("ui"):
            # started before any measured run (seconds of CPU, 15 s and more on a busy machine just
            # after an install), and idle until the --ui run prints its pages: they then open at once
            browser = _Browser.start()
        state_id, marker_id = common.fresh_id("state"), common.fresh_id("markers")
        summary_path = workdir / "summary.json"
        cmd = common.engine_command(
            source_id=amp_id, state_id=state_id, marker_id=marker_id, protocol=settings["protocol"],
            duration_s=duration, summary_json=str(summary_path), monitor=settings["monitor"],
            realtime=realtime,
        )
        run = common.run_live("closedloop", amp, cmd, state_id=state_id, marker_id=marker_id,
                              duration_s=duration, summary_json=summary_path,
                              state_capacity=state_capacity, progress=progress)
        result["closedloop"] = _closedloop_figures(run)
        result["realtime"] = {"engine": (run.summary or {}).get("realtime", {"requested": False}), "bench": bench_rt}
        if settings.get("ui"):
            result["with_ui"] = _ui_run(settings, amp, state_capacity, workdir, realtime, progress, browser)
            ours, theirs = result["closedloop"]["latency_ms"], result["with_ui"]["latency_ms"]
            result["ui_p99_cost_ms"] = theirs["p99"] - ours["p99"]
            result["ui_p50_cost_ms"] = theirs["p50"] - ours["p50"]
            result["ratio_p99_ui_over_without"] = theirs["p99"] / ours["p99"] if ours["p99"] > 0 else math.nan
        if settings["compare"] == "mne-lsl":
            channel = protocol.signal.channel
            mne_id = common.fresh_id("mne-lsl-state")
            cmd = [sys.executable, "-m", "closedloop.bench.latency", "mne-lsl-worker", "--source-id", amp_id,
                   "--state-source-id", mne_id, "--channel", channel,
                   "--band", str(protocol.band.low_hz), str(protocol.band.high_hz),
                   "--duration", f"{duration:g}"] + (["--realtime"] if realtime else [])
            # mne-lsl ships its own liblsl (1.17); it is pointed at pylsl's, so that both pipelines
            # use the same transport (and resolve each other reliably)
            import pylsl

            lib = getattr(getattr(pylsl.lib, "lib", None), "_name", None)
            env = {"MNE_LSL_LIB": lib} if lib and Path(lib).exists() else None
            mrun = common.run_live("mne-lsl", amp, cmd, state_id=mne_id, marker_id=None,
                                   duration_s=duration, summary_json=None,
                                   state_capacity=state_capacity, progress=progress, extra_env=env)
            figures = common.state_figures(mrun)
            figures.update(common.process_figures(mrun))
            figures["liblsl"] = lib if env else "mne-lsl's own"
            figures["pipeline"] = (f"mne_lsl.stream.StreamLSL(bufsize=2).connect(acquisition_delay=0.001); "
                                   f"filter({protocol.band.low_hz:g}, {protocol.band.high_hz:g}, picks={channel!r}); "
                                   f"get_data({MNE_LSL_WINDOW_S:g} s, picks={channel!r}); Hilbert phase of the last sample")
            result["mne_lsl"] = figures
            ours = result["closedloop"]["latency_ms"]
            theirs = figures["latency_ms"]
            result["ratio_p50_mne_lsl_over_closedloop"] = theirs["p50"] / ours["p50"] if ours["p50"] > 0 else math.nan
            result["ratio_p99_mne_lsl_over_closedloop"] = theirs["p99"] / ours["p99"] if ours["p99"] > 0 else math.nan
    finally:
        if browser is not None:
            browser.close()
        amp_figures = common.amplifier_figures(amp)
        amp.close()
    result["amplifier"] = amp_figures
    result["machine"] = common.machine_info()
    return result


class _Browser:
    """Headless Chromium, started on a thread at normal priority (a --realtime bench must not hand
    its policy to the browser); ``driver`` is None and ``error`` says why when it did not start."""

    def __init__(self) -> None:
        import threading

        self.driver = None
        self.error: str | None = None
        self.start_s = math.nan
        self._lock = threading.Lock()
        self._given_up = False

    @classmethod
    def start(cls) -> _Browser:
        import threading

        browser = cls()
        thread = threading.Thread(target=browser._start, name="bench-browser", daemon=True)
        thread.start()
        thread.join(timeout=120)
        with browser._lock:
            if browser.driver is None and browser.error is None:
                # still starting: whatever it starts later quits at once instead of being left open
                browser._given_up = True
                browser.error = "the browser did not start within 120 s"
        return browser

    def _start(self) -> None:
        import time

        from closedloop import realtime
        from closedloop.ui.browser import headless_chromium

        realtime.normal()
        started = time.monotonic()
        try:
            driver = headless_chromium()
        except Exception as exc:  # reported with the figures
            with self._lock:
                if not self._given_up:
                    self.error = f"the browser did not start: {exc}"
            return
        with self._lock:
            if not self._given_up:
                self.driver = driver
                self.start_s = time.monotonic() - started
                return
        try:
            driver.quit()
        except Exception as exc:  # the run goes on without it
            logger.debug("quitting the late browser: %s", exc)

    def close(self) -> None:
        """Quit the browser, unless pages took it over (they quit it themselves). Idempotent."""
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.quit()


class _Pages:
    """Opens the run's operator and participant pages in the started browser once it prints them."""

    def __init__(self, stderr_path: Path, browser: _Browser) -> None:
        import threading

        self.browser = browser
        self.stderr_path = stderr_path
        self.opened_at = math.nan  # LSL time the second page was open
        self.driver, browser.driver = browser.driver, None  # taken over: quit by close()
        self.error: str | None = None
        self.figures: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pages", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import re
        import time

        import pylsl

        if self.driver is None:
            self.error = self.browser.error
            return
        browser_s = self.browser.start_s
        deadline = time.monotonic() + 60
        urls = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                text = self.stderr_path.read_text(errors="replace")
            except OSError:
                text = ""
            op, part = re.search(r"operator page\s+(\S+)", text), re.search(r"participant page\s+(\S+)", text)
            if op and part:
                urls = op.group(1), part.group(1)
                break
            self._stop.wait(0.1)
        if urls is None:
            self.error = "the run printed no page addresses"
            return
        printed = time.monotonic()
        try:
            self.driver.get(urls[0])
            self.driver.switch_to.new_window("window")  # a window of its own: it keeps drawing
            self.driver.get(urls[1])
            self.opened_at = pylsl.local_clock()
        except Exception as exc:  # reported with the figures
            self.error = (
                f"the browser could not open the pages ({time.monotonic() - printed:.1f} s after the run "
                f"printed them; the browser took {browser_s:.1f} s to start): {exc}"
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
        if self.driver is None:
            return
        try:
            handles = self.driver.window_handles
            self.driver.switch_to.window(handles[0])
            op = self.driver.execute_script(
                "const h = window.closedloopOperator; return h ? {frames: h.frames, latencies: h.latencies.values} : null;")
            self.driver.switch_to.window(handles[-1])
            part = self.driver.execute_script(
                "const v = window.closedloopParticipant; return v ? {frames: v.frames, latencies: v.latencies.values} : null;")
            from closedloop.bench.common import summarize_ms

            for name, got in (("operator", op), ("participant", part)):
                if got:
                    self.figures[name] = {"frames": got["frames"],
                                          "display_latency_ms": summarize_ms(np.asarray(got["latencies"]) / 1e3)}
        except Exception as exc:
            self.error = f"the pages could not be read: {exc}"
        finally:
            self.driver.quit()


def _ui_run(settings: dict, amp, state_capacity: int, workdir: Path, realtime: bool, progress: bool,
            browser: _Browser) -> dict:
    """The engine again with ``--ui``, both pages open in a browser for the measured time."""
    from closedloop.bench import common

    state_id, marker_id = common.fresh_id("state-ui"), common.fresh_id("markers-ui")
    summary_path = workdir / "summary-ui.json"
    stderr_path = workdir / "closedloop-ui.stderr"
    # longer by the time the browser takes to open the pages: measured is what follows their opening
    duration = settings["duration_s"] + UI_OPEN_S
    cmd = common.engine_command(
        source_id=amp.source_id, state_id=state_id, marker_id=marker_id, protocol=settings["protocol"],
        duration_s=duration, summary_json=str(summary_path), monitor=settings["monitor"],
        realtime=realtime, ui=True,
    )
    pages = _Pages(stderr_path, browser)
    try:
        run = common.run_live("closedloop --ui", amp, cmd, state_id=state_id, marker_id=marker_id,
                              duration_s=duration, summary_json=summary_path,
                              state_capacity=state_capacity, progress=progress, stderr_path=stderr_path)
    finally:
        pages.close()
    first = run.states.received[0] if run.states is not None and run.states.n else math.nan
    # measured only while the pages were open (and a second after they opened)
    warmup = max(common.WARMUP_S, pages.opened_at - first + 1.0) if math.isfinite(pages.opened_at) else math.nan
    figures = common.state_figures(run, warmup_s=warmup) if math.isfinite(warmup) else {"latency_ms": common.summarize_ms(np.zeros(0))}
    figures.update(common.process_figures(run))
    figures["pages_open_after_s"] = pages.opened_at - first if math.isfinite(pages.opened_at) else None
    figures["pages"] = pages.figures
    figures["error"] = pages.error
    figures["browser_start_s"] = round(browser.start_s, 2) if math.isfinite(browser.start_s) else None
    s = run.summary or {}
    figures["dropped_samples"] = s.get("dropped_samples")
    figures["triggers"] = s.get("triggers")
    return figures


def _closedloop_figures(run) -> dict:
    from closedloop.bench import common

    figures = common.state_figures(run)
    figures.update(common.marker_figures(run))
    figures.update(common.process_figures(run))
    s = run.summary or {}
    figures["engine_summary"] = {
        key: s.get(key) for key in ("samples", "chunks", "dropped_samples", "gaps", "stalls", "triggers",
                                    "triggers_dropped", "dropped_by_reason", "latency_ms_p50", "latency_ms_p99",
                                    "delivery_error_ms_p50", "delivery_error_ms_p99", "end_reason")
    }
    figures["dropped_samples"] = s.get("dropped_samples")
    figures["gaps"] = s.get("gaps")
    figures["triggers"] = s.get("triggers")
    return figures


# ---------------------------------------------------------------------- the mne-lsl worker
def mne_lsl_worker(source_id: str, state_source_id: str, channel: str, band: tuple[float, float],
                   duration_s: float) -> int:
    """The comparison pipeline: mne-lsl acquisition and filtering, a State sample per new chunk."""
    import time

    import numpy as np
    import pylsl
    from mne_lsl.stream import StreamLSL
    from scipy.signal import hilbert

    from closedloop.channels import find_channel

    stream = StreamLSL(bufsize=2.0, source_id=source_id)
    deadline = time.monotonic() + 30.0
    while True:  # resolution on a busy machine can miss a round; the outlet is known to exist
        try:
            stream.connect(acquisition_delay=0.001, timeout=5)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
    pick = stream.ch_names[find_channel(channel, stream.ch_names)]
    stream.filter(band[0], band[1], picks=pick)
    info = pylsl.StreamInfo(state_source_id, "ClosedLoopState", 5, pylsl.IRREGULAR_RATE, "double64",
                            state_source_id)
    outlet = pylsl.StreamOutlet(info)
    while stream.n_new_samples == 0:  # the buffer fills before the first window
        time.sleep(0.01)
    time.sleep(MNE_LSL_WINDOW_S)
    clock = pylsl.local_clock
    deadline = clock() + duration_s
    row = [0.0] * 5
    while clock() < deadline:
        if stream.n_new_samples == 0:
            time.sleep(0.0001)
            continue
        data, ts = stream.get_data(winsize=MNE_LSL_WINDOW_S, picks=pick)
        analytic = hilbert(data[0])
        row[0] = float(ts[-1])
        row[1] = float(np.degrees(np.angle(analytic[-1])))
        row[2] = float(np.abs(analytic[-1]) * 1e6)
        row[3] = math.nan
        row[4] = 1.0
        outlet.push_sample(row, clock())
    del outlet
    stream.disconnect()
    return 0


def _worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m closedloop.bench.latency")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("mne-lsl-worker")
    w.add_argument("--source-id", required=True)
    w.add_argument("--state-source-id", required=True)
    w.add_argument("--channel", required=True)
    w.add_argument("--band", type=float, nargs=2, required=True)
    w.add_argument("--duration", type=float, required=True)
    w.add_argument("--realtime", action="store_true")
    args = p.parse_args(argv)
    if args.realtime:  # the same scheduling as the engine it is compared with
        from closedloop import realtime

        realtime.request()
    import mne

    mne.set_log_level("ERROR")
    return mne_lsl_worker(args.source_id, args.state_source_id, args.channel, tuple(args.band), args.duration)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
