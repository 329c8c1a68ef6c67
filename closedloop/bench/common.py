"""What the live benchmarks share: machine facts, an amplifier outlet, the engine as a separate
process, receivers for its State and Markers streams, latency matching, tables and JSON.

Nothing here imports :mod:`pylsl` at module level: :func:`start_lsl` must run first, so that the
benchmark's private loopback configuration is in force before liblsl loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from closedloop.errors import ClosedLoopError, StreamError, UsageError

#: How long the engine process may take to start and publish its State stream.
ENGINE_START_TIMEOUT_S = 30.0
#: psutil samples of the engine process are taken this often.
PROCESS_SAMPLE_S = 0.25
#: State samples received in the first second of a run are left out (connection and first calls).
WARMUP_S = 1.0

logger = logging.getLogger("closedloop.bench")


# ---------------------------------------------------------------------- set-up
#: GIL switch interval in the benchmark process, so the amplifier and receiver threads get the
#: interpreter back promptly (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0001


def start_lsl() -> None:
    """Keep the benchmark's LSL traffic on loopback, in a fresh session, before pylsl loads;
    shorten the GIL switch interval for the amplifier and receiver threads."""
    from closedloop.lsl.config import use_loopback_config

    use_loopback_config()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.freeze()  # the receivers' threads then never wait behind a collection of the libraries


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU model, cores, load, OS and the versions of everything the figures depend on."""
    info: dict = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from closedloop import __version__

    versions = {"closedloop": __version__}
    for name in ("numpy", "scipy", "pylsl", "mne", "mne-lsl", "psutil", "cython"):
        versions[name] = _version(name)
    if "pylsl" in sys.modules:
        versions["liblsl"] = sys.modules["pylsl"].library_version()
    info["versions"] = versions
    return info


# ---------------------------------------------------------------------- figures
def summarize_ms(values_s: np.ndarray) -> dict:
    """Count, p50/p95/p99, max and mean of times given in seconds, reported in milliseconds."""
    v = np.asarray(values_s, dtype=float)
    v = v[np.isfinite(v)] * 1e3
    if v.size == 0:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"n": int(v.size), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(v.max()), "mean": float(v.mean())}


def fmt(value, spec: str = ".3f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else format(value, spec)
    return str(value)


def write_json(path: str | os.PathLike | None, result: dict) -> None:
    """Write ``result`` as JSON (NaN as null) when a path is given."""
    if not path:
        return

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(val) for k, val in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(val) for val in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    target = Path(path)
    try:
        target.write_text(json.dumps(clean(result), indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write --json {str(path)!r}: {exc.strerror or exc}.") from exc


# ---------------------------------------------------------------------- signal
def simulated_base(sfreq: float, seconds: float = 20.0, n_channels: int = 64, seed: int = 1) -> tuple[np.ndarray, list[str]]:
    """Simulated EEG (``closedloop.simulate``) to build amplifier blocks from: (n_channels, n) µV."""
    from closedloop.simulate import simulate_eeg

    data, names, _, _ = simulate_eeg(seconds, sfreq, seed, n_channels)
    return data, list(names)


def amplifier_block(n_channels: int, sfreq: float, chunk_size: int, *, seconds: float = 20.0,
                    max_bytes: int = 64 * 2**20, base: tuple[np.ndarray, list[str]] | None = None
                    ) -> tuple[np.ndarray, list[str]]:
    """Simulated EEG to loop through the amplifier: ``(n_samples, n_channels)`` float32 µV, labels.

    The first 64 channels are the simulator's 10-10 montage (O2 carries alpha); more channels
    repeat them under other labels. The block is shortened so that it stays under ``max_bytes``;
    its length is a whole number of chunks. ``base`` reuses an earlier :func:`simulated_base`.
    """
    if base is None or n_channels < base[0].shape[0]:  # the simulator keeps the useful channels
        base = simulated_base(sfreq, seconds, min(n_channels, 64))
    data, names = base
    n_samples = int(min(seconds * sfreq, max_bytes // (4 * n_channels), data.shape[1]))
    n_samples = max(chunk_size, n_samples - n_samples % chunk_size)
    base_ch = min(n_channels, data.shape[0])
    rows = np.resize(np.arange(base_ch), n_channels)
    block = np.ascontiguousarray(data[rows, :n_samples].T, dtype=np.float32)
    labels = list(names[:base_ch]) + [f"E{i + 1}" for i in range(base_ch, n_channels)]
    return block, labels


# ---------------------------------------------------------------------- LSL parts
class Amplifier:
    """A real LSL outlet in this process that pushes ``block`` in chunks at real-time pace.

    Chunk ``k`` is due when its newest sample is, ``t0 + ((k + 1) * chunk_size - 1) / sfreq``;
    the thread sleeps until then and pushes. ``stamps`` holds the timestamp sent with each chunk
    (that of its newest sample) and ``pushed`` the LSL time of its push. With
    ``stamping="nominal"`` the timestamp is the due time, as an amplifier with a hardware sample
    clock stamps; with ``"push"`` it is the push time itself (the jitter of this thread's wake-ups
    then shows in the stream's timestamps).
    """

    def __init__(self, block: np.ndarray, ch_names: list[str], sfreq: float, chunk_size: int, *,
                 source_id: str, name: str, capacity_s: float, stamping: str = "nominal") -> None:
        import pylsl

        if stamping not in ("nominal", "push"):
            raise UsageError(f"--stamping must be 'nominal' or 'push', got {stamping!r}.")
        self.block = block
        self.sfreq = float(sfreq)
        self.chunk_size = int(chunk_size)
        self.stamping = stamping
        self.source_id = source_id
        info = pylsl.StreamInfo(name, "EEG", block.shape[1], self.sfreq, "float32", source_id)
        chans = info.desc().append_child("channels")
        for label in ch_names:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", "microvolts")
            ch.append_child_value("type", "EEG")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=self.chunk_size, max_buffered=30)
        capacity = int(capacity_s * self.sfreq / self.chunk_size) + 16
        self.stamps = np.full(capacity, np.nan)
        self.pushed = np.full(capacity, np.nan)
        self.n_chunks = 0
        self.t0 = math.nan
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-amplifier", daemon=True)

    def start(self) -> Amplifier:
        self._thread.start()
        return self

    def _run(self) -> None:
        import pylsl

        clock = pylsl.local_clock
        push = self.outlet.push_chunk
        block, cs, dt = self.block, self.chunk_size, 1.0 / self.sfreq
        n_block = block.shape[0]
        capacity = self.stamps.size
        nominal = self.stamping == "nominal"
        start = clock() + 0.05
        self.t0 = start
        k = pos = 0
        while not self._stop.is_set():
            due = start + ((k + 1) * cs - 1) * dt
            wait = due - clock()
            if wait > 0:
                time.sleep(wait)
            now = clock()
            stamp = due if nominal else now
            push(block[pos : pos + cs], stamp)
            if k < capacity:
                self.stamps[k] = stamp
                self.pushed[k] = now
            k += 1
            self.n_chunks = k
            pos += cs
            if pos >= n_block:
                pos = 0

    @property
    def lateness_s(self) -> np.ndarray:
        """How late each push was against its due time (the pacing thread's wake-up jitter)."""
        n = min(self.n_chunks, self.stamps.size)
        due = self.t0 + ((np.arange(n) + 1) * self.chunk_size - 1) / self.sfreq
        return self.pushed[:n] - due

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        del self.outlet


class _Receiver:
    """An open inlet on one of the engine's streams, read by ``_run`` on a thread until
    :meth:`close`; a subclass sets up what ``_run`` fills, then starts ``_thread``."""

    def __init__(self, info, thread_name: str) -> None:
        import pylsl

        self.inlet = pylsl.StreamInlet(info, max_buflen=30, recover=False)
        self.inlet.open_stream(5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # a lost stream has nothing left to close
            self.inlet.close_stream()
        del self.inlet


class StateReceiver(_Receiver):
    """An inlet on a State stream; records, per sample, its receipt time, ``sample_ts`` and its
    LSL timestamp (the moment the engine pushed it), in preallocated arrays."""

    def __init__(self, info, capacity: int) -> None:
        super().__init__(info, "bench-state")
        self.received = np.full(capacity, np.nan)
        self.sample_ts = np.full(capacity, np.nan)
        self.state_ts = np.full(capacity, np.nan)
        self.n = 0
        self.overflow = 0
        self._thread.start()

    def _run(self) -> None:
        import pylsl

        inlet = self.inlet
        clock = pylsl.local_clock
        obj, buf, n_ch = inlet.obj, inlet.sample, inlet.channel_count
        pull = getattr(inlet, "do_pull_sample", None)
        err = ctypes.c_int()
        timeout = ctypes.c_double(0.05)
        ref_buf, ref_err = ctypes.byref(buf), ctypes.byref(err)
        capacity = self.received.size
        while not self._stop.is_set():
            if pull is not None:  # liblsl's own call: no per-sample allocation before the clock read
                ts = pull(obj, ref_buf, n_ch, timeout, ref_err)
                now = clock()
                if err.value:
                    return
                if not ts:
                    continue
                value = buf[0]
            else:
                sample, ts = inlet.pull_sample(0.05)
                now = clock()
                if ts is None:
                    continue
                value = sample[0]
            i = self.n
            if i < capacity:
                self.received[i] = now
                self.sample_ts[i] = value
                self.state_ts[i] = ts
                self.n = i + 1
            else:
                self.overflow += 1


class MarkerReceiver(_Receiver):
    """An inlet on a Markers stream; records each marker's LSL timestamp, receipt time and JSON."""

    def __init__(self, info) -> None:
        super().__init__(info, "bench-markers")
        self.markers: list[tuple[float, float, str]] = []
        self._thread.start()

    def _run(self) -> None:
        import pylsl

        clock = pylsl.local_clock
        lost = getattr(pylsl, "LostError", None) or pylsl.util.LostError
        while not self._stop.is_set():
            try:
                sample, ts = self.inlet.pull_sample(0.05)
            except lost:
                return
            now = clock()
            if ts is not None:
                self.markers.append((ts, now, sample[0]))


# ---------------------------------------------------------------------- processes
class EngineStartError(ClosedLoopError):
    """The measured process ended before publishing its streams (bad settings, not load)."""


@dataclass
class ProcessTrace:
    """psutil samples of one process: time (LSL clock), user+sys CPU seconds, resident bytes."""

    time: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def cpu_share(self, start: float, stop: float = math.inf) -> float:
        """Share of one core used between two times (1.0 = one core fully busy)."""
        t = np.asarray(self.time)
        keep = np.flatnonzero((t >= start) & (t <= stop))
        if keep.size < 2:
            return math.nan
        a, b = keep[0], keep[-1]
        return (self.cpu_s[b] - self.cpu_s[a]) / (self.time[b] - self.time[a])


@dataclass
class LiveRun:
    """Raw material of one live run (closedloop or the comparison pipeline)."""

    label: str
    amplifier: Amplifier
    states: StateReceiver | None
    markers: MarkerReceiver | None
    trace: ProcessTrace
    summary: dict | None
    returncode: int
    stderr: str
    wall_s: float


def engine_command(*, source_id: str, state_id: str, marker_id: str, protocol: str,
                   duration_s: float, summary_json: str, monitor: bool = False,
                   realtime: bool = False, ui: bool = False) -> list[str]:
    """``closedloop run`` as a separate Python process, on the amplifier's source_id."""
    cmd = [
        sys.executable, "-m", "closedloop", "run", "--protocol", protocol, "--source-id", source_id,
        "--resolve-timeout", "20", "--duration", f"{duration_s:g}", "--timeout", "10",
        "--state-name", state_id, "--state-source-id", state_id,
        "--marker-name", marker_id, "--marker-source-id", marker_id,
        "--summary-json", summary_json,
    ]
    if monitor:
        cmd.append("--monitor")
    if realtime:
        cmd.append("--realtime")
    if ui:  # the browser views beside the loop, on a free port (printed on stderr)
        cmd += ["--ui", "--ui-port", "0"]
    return cmd


REALTIME_HELP = ("run the engine with --realtime, and this benchmark's amplifier and measuring inlets under "
                 "real-time scheduling too (as hardware would be), so that other programs on the machine do "
                 "not set the tail latency")


def bench_realtime(enabled: bool) -> dict:
    """With ``enabled``, put this process's threads created from now on under SCHED_FIFO.

    Returns what was granted (``realtime.RealtimeStatus.as_dict``), printed notes included.
    """
    if not enabled:
        return {"requested": False}
    from closedloop import realtime

    # one step below the engine: the amplifier and the inlets must not preempt the loop on a
    # two-core machine
    status = realtime.request(realtime.DEFAULT_PRIORITY - 1, lock_memory=False)
    for note in status.notes:
        logger.warning("note: %s.", note)
    return status.as_dict()


def _resolve(source_id: str, timeout: float, proc: subprocess.Popen, what: str, stderr_path: Path):
    import pylsl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pylsl.resolve_byprop("source_id", source_id, 1, 1.0)
        if found:
            return found[0]
        if proc.poll() is not None:
            kind = EngineStartError if proc.returncode else ClosedLoopError
            raise kind(f"the {what} process ended (exit {proc.returncode}) before its stream {source_id!r} "
                       f"was found: {_last_line(stderr_path)}")
    raise StreamError(f"the {what} process published no stream with source_id {source_id!r} "
                      f"within {timeout:g} s.")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


def run_live(
    label: str,
    amplifier: Amplifier,
    command: list[str],
    *,
    state_id: str,
    marker_id: str | None,
    duration_s: float,
    summary_json: Path | None,
    state_capacity: int,
    progress: bool = True,
    on_sample=None,
    extra_env: dict[str, str] | None = None,
    stderr_path: Path | None = None,
) -> LiveRun:
    """Start ``command`` (the engine or the comparison pipeline), receive its State (and Markers)
    while sampling its CPU and memory, wait for it to end and collect what it reported.

    The amplifier must already be pushing. ``on_sample(trace)`` is called after each psutil
    sample (the soak uses it for its progress line).
    """
    import psutil
    import pylsl

    from closedloop.progress import progress_bar

    if stderr_path is None:  # given: the caller reads it while the run goes on (run --ui prints its pages)
        stderr_path = Path(tempfile.mkdtemp(prefix="closedloop-bench-")) / f"{label}.stderr"
    trace = ProcessTrace()
    states = markers = None
    with open(stderr_path, "wb") as err_fh:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err_fh,
                                env={**os.environ, **(extra_env or {})})
    started = time.monotonic()
    try:
        ps = psutil.Process(proc.pid)
        info = _resolve(state_id, ENGINE_START_TIMEOUT_S, proc, label, stderr_path)
        states = StateReceiver(info, state_capacity)
        if marker_id is not None:
            markers = MarkerReceiver(_resolve(marker_id, ENGINE_START_TIMEOUT_S, proc, label, stderr_path))
        limit = duration_s + ENGINE_START_TIMEOUT_S + 15.0
        with progress_bar(round(duration_s), f"bench {label}", disable=not progress) as advance:
            shown = 0
            while proc.poll() is None:
                if time.monotonic() - started > limit:
                    proc.terminate()
                    break
                try:
                    with ps.oneshot():
                        alive = ps.status() != psutil.STATUS_ZOMBIE
                        cpu = ps.cpu_times()
                        rss = ps.memory_info().rss
                except psutil.Error:
                    alive = False
                if not alive or rss == 0:  # exiting: its figures are no longer the loop's
                    time.sleep(0.05)
                    continue
                trace.time.append(pylsl.local_clock())
                trace.cpu_s.append(cpu.user + cpu.system)
                trace.rss.append(rss)
                if on_sample is not None:
                    on_sample(trace)
                if states.n:
                    elapsed = int(pylsl.local_clock() - states.received[0])
                    if elapsed > shown:
                        advance(min(elapsed, round(duration_s)) - shown)
                        shown = min(elapsed, round(duration_s))
                time.sleep(PROCESS_SAMPLE_S)
        proc.wait(timeout=15)
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        for receiver in (markers, states):  # inlets close before the amplifier's outlet
            if receiver is not None:
                receiver.close()
    wall = time.monotonic() - started
    summary = None
    if summary_json is not None and summary_json.exists():
        summary = json.loads(summary_json.read_text())
    stderr = stderr_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise ClosedLoopError(f"the {label} process ended with exit {proc.returncode}: {_last_line(stderr_path)}")
    return LiveRun(label, amplifier, states, markers, trace, summary, proc.returncode, stderr, wall)


def fresh_id(kind: str) -> str:
    return f"closedloop-bench-{kind}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------- analysis
def match_states(run: LiveRun) -> dict[str, np.ndarray]:
    """Pair every State sample with the amplifier chunk holding the newest sample it reports.

    The State's ``sample_ts`` is the amplifier's timestamp mapped through the engine inlet's
    time correction; on one machine that is a few microseconds at most, and the median residual
    (reported as ``clock_offset_ms``) is removed before pairing. Returns arrays over the matched
    samples: ``received`` (receipt time here), ``latency_s`` (receipt - push of the chunk),
    ``engine_s`` (State pushed - chunk pushed), ``chunk`` (chunk index), plus ``offset_s`` and
    ``unmatched`` (count).
    """
    amp, st = run.amplifier, run.states
    n_chunks = min(amp.n_chunks, amp.stamps.size)
    stamps, pushed = amp.stamps[:n_chunks], amp.pushed[:n_chunks]
    n = st.n
    ts, received, state_ts = st.sample_ts[:n], st.received[:n], st.state_ts[:n]
    chunk_dt = amp.chunk_size / amp.sfreq
    empty = np.empty(0)
    if n == 0 or n_chunks == 0:
        return {"received": empty, "latency_s": empty, "engine_s": empty, "chunk": empty.astype(int),
                "offset_s": math.nan, "unmatched": n}
    near = np.clip(np.searchsorted(stamps, ts), 1, n_chunks - 1)
    nearest = np.where(np.abs(stamps[near - 1] - ts) < np.abs(stamps[near] - ts), near - 1, near)
    residual = ts - stamps[nearest]
    offset = float(np.median(residual)) if residual.size else 0.0
    corrected = ts - offset
    half_sample = 0.5 / amp.sfreq
    idx = np.searchsorted(stamps, corrected - half_sample)
    ok = idx < n_chunks
    idx_ok = np.minimum(idx, n_chunks - 1)
    ok &= (stamps[idx_ok] - corrected) < chunk_dt - half_sample
    idx = idx_ok[ok]
    return {
        "received": received[ok],
        "latency_s": received[ok] - pushed[idx],
        "engine_s": state_ts[ok] - pushed[idx],
        "chunk": idx,
        "offset_s": offset,
        "unmatched": int(n - ok.sum()),
    }


def state_figures(run: LiveRun, *, warmup_s: float = WARMUP_S) -> dict:
    """Latency percentiles (ms) of one run, after ``warmup_s`` from the first State received."""
    m = match_states(run)
    keep = m["received"] >= (m["received"][0] + warmup_s) if m["received"].size else np.zeros(0, bool)
    chunks = m["chunk"][keep]
    n_span = int(chunks[-1] - chunks[0] + 1) if chunks.size else 0
    lat = m["latency_s"][keep]
    worst_at = float(m["received"][keep][np.argmax(lat)] - m["received"][0]) if lat.size else math.nan
    return {
        "latency_ms": summarize_ms(lat),
        "latency_max_at_s": worst_at,
        "engine_ms": summarize_ms(m["engine_s"][keep]),
        "state_samples": int(run.states.n),
        "state_samples_matched": int(m["latency_s"].size),
        "state_samples_unmatched": m["unmatched"],
        "state_overflow": int(run.states.overflow),
        "chunks_in_window": n_span,
        "chunks_without_own_state": max(0, n_span - int(np.unique(chunks).size)),
        "clock_offset_ms": m["offset_s"] * 1e3 if math.isfinite(m["offset_s"]) else math.nan,
    }


def marker_figures(run: LiveRun) -> dict:
    """Delivery precision (|LSL timestamp - scheduled_ts|) and push-to-receipt of the markers.

    A plan is made while the engine processes a chunk and is published with that chunk's State
    sample (same ``sample_ts``); its lead is ``scheduled_ts`` minus that State's push time. A plan
    with a negative lead was already overdue when made, so the loop could only fire it late; the
    precision of the wait itself shows in the plans made ahead (``delivery_error_ms_planned_ahead``).
    """
    rows = run.markers.markers if run.markers is not None else []
    st = run.states
    made_ts = st.sample_ts[: st.n] if st is not None else np.empty(0)
    made_at = st.state_ts[: st.n] if st is not None else np.empty(0)
    errors, transit, lead, bad = [], [], [], 0
    for ts, received, text in rows:
        try:
            payload = json.loads(text)
            scheduled = float(payload["scheduled_ts"])
            sample_ts = float(payload["sample_ts"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        errors.append(ts - scheduled)
        transit.append(received - ts)
        i = int(np.searchsorted(made_ts, sample_ts - 1e-9))
        found = i < made_ts.size and abs(made_ts[i] - sample_ts) < 1e-9
        lead.append(scheduled - made_at[i] if found else math.nan)
    errors_arr, lead_arr = np.asarray(errors), np.asarray(lead)
    ahead = lead_arr > 0
    return {
        "markers": len(rows),
        "markers_unreadable": bad,
        "delivery_error_ms": summarize_ms(np.abs(errors_arr)),
        "delivery_late_ms_mean": float(errors_arr.mean() * 1e3) if errors_arr.size else math.nan,
        "delivery_over_0_2ms": int(np.sum(np.abs(errors_arr) > 0.0002)),
        "delivery_error_ms_planned_ahead": summarize_ms(np.abs(errors_arr[ahead])),
        "plans_overdue_when_made": int(np.sum(lead_arr <= 0)),
        "plans_without_state": int(np.sum(np.isnan(lead_arr))),
        # per marker, ms: actual - scheduled (positive = late), scheduled - State push (lead)
        "delivery_error_ms_signed": [round(float(e) * 1e3, 4) for e in errors_arr[:1000]],
        "plan_lead_ms": [round(float(e) * 1e3, 4) if math.isfinite(e) else None for e in lead_arr[:1000]],
        "marker_latency_ms": summarize_ms(np.asarray(transit)),
    }


def process_figures(run: LiveRun) -> dict:
    """CPU share of one core over the measured window, and resident memory (MB)."""
    start = run.states.received[0] + WARMUP_S if run.states is not None and run.states.n else -math.inf
    rss = np.asarray(run.trace.rss, dtype=float) / 2**20
    return {
        "cpu_percent_of_one_core": 100.0 * run.trace.cpu_share(start),
        "rss_mb_start": float(rss[0]) if rss.size else math.nan,
        "rss_mb_end": float(rss[-1]) if rss.size else math.nan,
    }


def amplifier_figures(amp: Amplifier) -> dict:
    late = amp.lateness_s
    return {
        "chunks_pushed": int(amp.n_chunks),
        "samples_pushed": int(amp.n_chunks * amp.chunk_size),
        "push_lateness_ms": summarize_ms(late),
    }
