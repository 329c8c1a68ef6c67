"""Fault injection for the reliability tests: real LSL outlets that misbehave, a marker consumer
that can walk away, bad recordings written from real ones, and the `closedloop` command line as a
subprocess.

Everything here drives real parts: pylsl outlets and inlets on loopback, real files, the real
``python -m closedloop`` process. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pylsl

from tests.helpers.hosted import HostedOutlet
from tests.helpers.lsl import eeg_info
from tests.helpers.protocols import phase_toml
from tests.helpers.recordings import PROJECT_ROOT

#: Channels of the synthetic live stream: sample index, two EEG channels, and the target O2.
LIVE_CH_NAMES = ["index", "O1", "O2", "Cz"]
LIVE_SFREQ = 500.0
ALPHA_HZ = 10.0

#: A short-baseline phase protocol on O2 for live runs (the fault, not the estimator, is tested).
LIVE_PROTOCOL = phase_toml(
    "reliability", "O2", method="echt", amplitude_gate="none", baseline_s=2.0, hold_s=1.0
)


def env() -> dict[str, str]:
    """The environment for a `closedloop` subprocess: this tree first on the path."""
    out = dict(os.environ)
    out["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def closedloop(*args: str) -> list[str]:
    """argv for ``python -m closedloop ARGS``."""
    return [sys.executable, "-m", "closedloop", *map(str, args)]


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``python -m closedloop ARGS`` to completion (text output captured)."""
    return subprocess.run(
        closedloop(*args),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=PROJECT_ROOT,
    )


def start_cli(*args: str) -> subprocess.Popen:
    """Start ``python -m closedloop ARGS`` (stdout/stderr piped, text)."""
    return subprocess.Popen(
        closedloop(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=PROJECT_ROOT,
    )


def write_protocol(path: Path, text: str = LIVE_PROTOCOL) -> Path:
    path.write_text(text)
    return path


def run_args(protocol: Path, source_id: str, *extra: str) -> list[str]:
    """``closedloop run`` arguments against ``source_id``; markers and state on ``-m``/``-s`` ids."""
    return [
        "run",
        "--protocol",
        str(protocol),
        "--source-id",
        source_id,
        "--marker-source-id",
        source_id + "-m",
        "--state-source-id",
        source_id + "-s",
        "--resolve-timeout",
        "20",
        *extra,
    ]


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str]:
    """Wait for a started `closedloop` process (killed at the timeout): (exit code, stderr)."""
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def live_args(
    tmp_path: Path, source_id: str, duration: float, protocol_text: str, *extra: str
) -> list[str]:
    """:func:`run_args` for a run of ``duration`` s with ``protocol_text`` written beside it and
    its summary in ``tmp_path / f"{source_id}.json"``."""
    protocol = write_protocol(tmp_path / f"{source_id}.toml", protocol_text)
    return run_args(
        protocol,
        source_id,
        "--duration",
        str(duration),
        "--summary-json",
        str(tmp_path / f"{source_id}.json"),
        *extra,
    )


def run_live(
    tmp_path: Path, source_id: str, duration: float, protocol_text: str = LIVE_PROTOCOL, *extra: str
):
    """One `closedloop run` to the end: (completed process, summary or None)."""
    done = run_cli(
        *live_args(tmp_path, source_id, duration, protocol_text, *extra), timeout=duration + 60
    )
    summary = tmp_path / f"{source_id}.json"
    return done, (read_summary(summary) if summary.exists() else None)


def run_live_together(tmp_path: Path, runs: list[tuple[str, float, tuple[str, ...]]]):
    """Several `closedloop run` processes at once (each mostly waits on its stream):
    ``(source_id, duration, extra args)`` each; (exit code, stderr, summary or None) each."""
    procs = [
        start_cli(*live_args(tmp_path, sid, duration, LIVE_PROTOCOL, *extra))
        for sid, duration, extra in runs
    ]
    results = []
    for proc, (sid, duration, _) in zip(procs, runs):
        code, err = finish(proc, timeout=duration + 60)
        summary = tmp_path / f"{sid}.json"
        results.append((code, err, read_summary(summary) if summary.exists() else None))
    return results


def alpha_stream(
    seconds: float,
    sfreq: float = LIVE_SFREQ,
    seed: int = 0,
    amplitude_uv: float = 20.0,
    *,
    n_channels: int = len(LIVE_CH_NAMES),
    channel: int = 2,
) -> np.ndarray:
    """(n_channels, n) µV: noise of SD 2 µV, with a 10 Hz cosine of known phase (0 at t = 0) on
    ``channel`` (O2 of :data:`LIVE_CH_NAMES`); t = k / sfreq."""
    rng = np.random.default_rng(seed)
    n = round(sfreq * seconds)
    t = np.arange(n) / sfreq
    data = rng.normal(0.0, 2.0, (n_channels, n))
    data[channel] += amplitude_uv * np.cos(2 * np.pi * ALPHA_HZ * t)
    return data


class FaultyOutlet(HostedOutlet):
    """A real pylsl outlet in its own process (:mod:`tests.helpers.hosted`), pacing ``data`` like an amplifier, with faults on request.

    Sample ``k`` is due at ``t0 + k / (sfreq * rate_factor)`` (LSL clock) and stamped with that
    time, so the stamps follow the true rate even when it differs from the nominal one. Channel 0
    carries the sample index when ``index_channel``.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Values to send (looped).
    sfreq : float
        Nominal rate written in the stream's info.
    rate_factor : float
        Actual rate / nominal rate (1.02 = 2 % fast).
    stall : (float, float), optional
        ``(after_s, for_s)``: stop pushing ``after_s`` seconds after the first consumer connected
        (not after the start: a session's own start-up time must not eat into what comes before
        the stall) for ``for_s`` seconds; the samples due meanwhile are lost (as from an amplifier
        whose link hung).
    stamp : callable, optional
        ``stamp(chunk_number, true_stamp) -> stamp`` to push instead (non-monotonic or duplicated
        timestamps).
    channel_format : str
        ``"float32"``, ``"double64"``, ``"int16"``, ``"int32"`` or ``"string"``.
    unit : str
        The unit written in every channel's description.
    """

    def __init__(
        self,
        data: np.ndarray,
        sfreq: float,
        source_id: str,
        *,
        name: str = "faulty-eeg",
        chunk_size: int = 5,
        index_channel: bool = True,
        ch_names: list[str] | None = None,
        channel_format: str = "float32",
        unit: str = "microvolts",
        rate_factor: float = 1.0,
        stall: tuple[float, float] | None = None,
        stamp: Callable[[int, float], float] | None = None,
    ) -> None:
        self.channel_format = channel_format
        self.data = np.array(data, dtype=np.float64)
        if index_channel:
            self.data[0] = np.arange(self.data.shape[1])
        self.sfreq = float(sfreq)
        self.rate = self.sfreq * rate_factor
        self.chunk_size = int(chunk_size)
        self.stall = stall
        self.stamp = stamp
        labels = ch_names or LIVE_CH_NAMES[: self.data.shape[0]]
        self._info_args = (name, self.data.shape[0], self.sfreq, channel_format, source_id, labels, unit)
        self.t0: float | None = None
        self.sent = 0  # samples pushed (index of the next one due)
        self.pushed: list[tuple[int, float]] = []  # (index of a chunk's last sample, its stamp)
        self.stall_window: tuple[float, float] | None = None  # LSL times with nothing pushed

    def _open(self) -> None:
        self.outlet = pylsl.StreamOutlet(eeg_info(*self._info_args), chunk_size=self.chunk_size, max_buffered=60)

    def _loop(self, halt) -> None:
        n = self.data.shape[1]
        start = pylsl.local_clock() + 0.05
        self._set(t0=start)
        k = 0
        number = 0
        connected = math.inf  # LSL time the first consumer was seen
        while not halt.is_set():
            stop = k + self.chunk_size
            due = start + (stop - 1) / self.rate
            delay = due - pylsl.local_clock()
            if delay > 0:
                time.sleep(delay)
            if self.stall is not None and connected == math.inf and self.outlet.have_consumers():
                connected = due
            if (
                self.stall is not None
                and self.stall_window is None
                and due - connected >= self.stall[0]
            ):
                resume = due + self.stall[1]
                self._set(stall_window=(due, resume))
                while pylsl.local_clock() < resume and not halt.is_set():
                    time.sleep(0.01)
                # the samples due while stalled never come
                k = math.ceil((resume - start) * self.rate)
                continue
            idx = np.arange(k, stop)
            values = self.data[:, idx % n].T
            if self.channel_format == "string":
                chunk = [[f"{v:.3f}" for v in row] for row in values]
            elif self.channel_format in ("int16", "int32"):
                chunk = np.round(values).astype(
                    np.int16 if self.channel_format == "int16" else np.int32
                )
            else:
                chunk = np.ascontiguousarray(
                    values, dtype=np.float32 if self.channel_format == "float32" else np.float64
                )
            stamp = due if self.stamp is None else self.stamp(number, due)
            if self.channel_format == "string":
                for i, row in enumerate(chunk):
                    self.outlet.push_sample(row, stamp - (len(chunk) - 1 - i) / self.rate)
            else:
                self.outlet.push_chunk(chunk, stamp)
            self._append("pushed", (stop - 1, stamp))
            self._set(sent=stop)
            k = stop
            number += 1


class MarkerConsumer:
    """Receives a Markers stream (by source_id) on a thread until :meth:`disconnect`."""

    def __init__(self, source_id: str, resolve_s: float = 20.0) -> None:
        self.source_id = source_id
        self.resolve_s = resolve_s
        self.markers: list[dict] = []
        self.stamps: list[float] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marker-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        found = pylsl.resolve_byprop("source_id", self.source_id, 1, self.resolve_s)
        if not found:
            return
        inlet = pylsl.StreamInlet(found[0], max_buflen=10)
        inlet.open_stream(5.0)
        self.connected.set()
        while not self._stop.is_set():
            sample, stamp = inlet.pull_sample(0.05)
            if stamp is not None:
                self.markers.append(json.loads(sample[0]))
                self.stamps.append(stamp)
        inlet.close_stream()
        del inlet

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.markers) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.markers) >= n

    def disconnect(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def read_summary(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float, seen: list[str]) -> bool:
    """Read ``proc.stderr`` line by line (into ``seen``) until one contains ``needle``."""
    deadline = time.monotonic() + timeout
    box: list[str | None] = []

    def reader() -> None:
        while True:
            line = proc.stderr.readline()
            box.append(line)
            if not line or needle in line:
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    seen.extend(line for line in box if line)
    return any(line and needle in line for line in box)


def sine_phase_deg(
    times_lsl: np.ndarray, t0: float, rate: float, sfreq_nominal: float | None = None
) -> np.ndarray:
    """Phase (deg) of :func:`alpha_stream`'s O2 cosine at LSL times, for a stream started at ``t0``.

    The cosine has 10 cycles per ``sfreq_nominal`` samples; played at ``rate`` samples per second
    its true frequency is ``10 * rate / sfreq_nominal``. Looping is ignored (tests stay short).
    """
    nominal = sfreq_nominal or rate
    samples = (np.asarray(times_lsl) - t0) * rate
    return np.angle(np.exp(1j * 2 * np.pi * ALPHA_HZ * samples / nominal), deg=True)


def circular_mean_deg(angles_deg: np.ndarray) -> tuple[float, float]:
    """(mean angle, circular standard deviation) in degrees."""
    z = np.exp(1j * np.radians(np.asarray(angles_deg))).mean()
    return float(np.degrees(np.angle(z))), float(
        np.degrees(np.sqrt(-2 * np.log(max(abs(z), 1e-12))))
    )
