"""A sound card that runs in real time without hardware: PulseAudio's null sink, and its monitor.

:class:`NullSink` starts a private ``pulseaudio`` (its own runtime folder, no default script,
never exiting on idle) with one null sink, and points this process's and its children's
PulseAudio clients at it (``PULSE_SERVER``, ``PULSE_SINK``); PortAudio reaches it through
ALSA's ``pulse`` plugin (Debian's ``libasound2-plugins``), as device ``"pulse"``.
:class:`MonitorRecording` records the sink's monitor with ``parecord`` while a test plays.

The sink runs at 50 kHz: a frame is exactly 20 us there, and the null sink advances its timer
by whole microseconds per rendered chunk, so at 48 kHz (20.83 us a frame) it renders a few
hundred parts per million fast (measured here: 48012 frames per second of the system clock)
and its recording is not a clock to measure onsets against; at 50 kHz it is.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

RATE = 50000
SINK = "closedloop_test"
TOOLS = ("pulseaudio", "parecord", "pactl")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


class NullSink:
    """A private PulseAudio server with one null sink; use as a context manager."""

    def __init__(self, rate: int = RATE, channels: int = 2) -> None:
        self.rate = rate
        self.channels = channels
        self.dir = Path(tempfile.mkdtemp(prefix="closedloop-pulse-"))
        self.runtime = self.dir / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.socket = self.runtime / "native"
        self.env = {
            "XDG_RUNTIME_DIR": str(self.runtime),
            "PULSE_RUNTIME_PATH": str(self.runtime / "pulse"),
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_SINK": SINK,
            "PULSE_STATE_PATH": str(self.dir / "state"),
            "PULSE_CONFIG_PATH": str(self.dir / "config"),
            "HOME": str(self.dir),
        }
        self.proc: subprocess.Popen | None = None
        self._saved: dict[str, str | None] = {}

    def start(self, timeout_s: float = 10.0) -> NullSink:
        env = {**os.environ, **self.env}
        cmd = [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "--use-pid-file=no", "--log-target=stderr", "--log-level=error",
            f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            f"--load=module-null-sink sink_name={SINK} rate={self.rate} channels={self.channels}",
        ]
        self.log = open(self.dir / "pulseaudio.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited ({self.proc.returncode}): {self.read_log()}")
            ok = subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5)
            if ok.returncode == 0 and SINK.encode() in subprocess.run(
                ["pactl", "list", "short", "sinks"], env=env, capture_output=True, timeout=5
            ).stdout:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pulseaudio did not come up within {timeout_s:g} s: {self.read_log()}")
            time.sleep(0.05)
        self._realtime()
        for key, value in self.env.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        return self

    def _realtime(self) -> None:
        """Every thread of the server at real-time priority, as an audio server is run for real-time
        work: its main thread passes the sink's requests for data on to the clients, and at normal
        priority, with the machine loaded, it answered 20-150 ms late and the stream underran
        (pulseaudio sets only its sink thread to real time, at priority 5, itself)."""
        if not hasattr(os, "sched_setscheduler"):
            return
        try:
            tasks = os.listdir(f"/proc/{self.proc.pid}/task")
        except OSError:
            return
        for tid in tasks:
            try:
                os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(40))
            except OSError:
                pass

    def read_log(self) -> str:
        try:
            return (self.dir / "pulseaudio.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if getattr(self, "log", None) is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NullSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MonitorRecording:
    """``parecord`` of the null sink's monitor: mono float samples at the sink's rate."""

    def __init__(self, sink: NullSink, path: Path) -> None:
        self.sink = sink
        self.path = Path(path)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 5.0) -> MonitorRecording:
        env = {**os.environ, **self.sink.env}
        self.proc = subprocess.Popen(
            ["parecord", "--raw", f"--device={SINK}.monitor", f"--rate={self.sink.rate}", "--channels=1",
             "--format=s16le", "--latency-msec=20", str(self.path)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while not (self.path.exists() and self.path.stat().st_size > 0):
            if self.proc.poll() is not None:
                raise RuntimeError(f"parecord exited: {self.proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("parecord wrote nothing")
            time.sleep(0.02)
        return self

    def stop(self) -> np.ndarray:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        raw = np.fromfile(self.path, dtype="<i2") if self.path.exists() else np.zeros(0, "<i2")
        return raw.astype(np.float64) / 32768.0


def find_onsets(audio: np.ndarray, rate: float, *, threshold: float = 1e-3, min_gap_s: float = 0.08) -> np.ndarray:
    """Sample indices where sound starts after at least ``min_gap_s`` of silence."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return loud
    gaps = np.diff(loud) > int(min_gap_s * rate)
    return np.concatenate(([loud[0]], loud[1:][gaps]))
