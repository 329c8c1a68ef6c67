"""The browser views in tests: a real ``closedloop run --ui`` or ``closedloop ui`` process, its
printed addresses, raw HTTP requests to it, a real Markers inlet, and where screenshots go."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from pathlib import Path

import pylsl

from tests.helpers.faults import closedloop, env
from tests.helpers.recordings import PROJECT_ROOT

#: Screenshots the browser tests write (ignored by git); each test prints the paths it wrote.
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


class ViewsProcess:
    """``python -m closedloop ARGS`` whose stderr is read for the pages' addresses and token."""

    def __init__(self, *args: str, log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(closedloop(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._fh, env=env(), cwd=PROJECT_ROOT)
        self.operator = self.participant = self.token = None
        self.port = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 40.0) -> ViewsProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            op = re.search(r"operator page\s+(\S+)", text)
            part = re.search(r"participant page\s+(\S+)", text)
            if op and part and re.search(r"closedloop ui: (control token|view only)", text):
                self.operator, self.participant = op.group(1), part.group(1)
                token = re.search(r"control token (\S+)", text)
                self.token = token.group(1) if token else None
                self.port = int(re.search(r":(\d+)/", self.participant).group(1))
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"the process ended (exit {self.proc.returncode}) before serving: {text}")
            time.sleep(0.05)
        raise AssertionError(f"no page addresses within {timeout} s: {self.text()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._fh.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


def request(port: int, method: str, path: str, *, body: dict | None = None, headers: dict | None = None,
            host: str | None = None) -> tuple[int, bytes]:
    """One raw HTTP request, the path sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        data = json.dumps(body).encode() if body is not None else b""
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def status(port: int) -> dict:
    code, body = request(port, "GET", "/api/status")
    assert code == 200, body
    return json.loads(body)


class Markers:
    """A real inlet on a Markers stream; :meth:`drain` returns ``(timestamp, payload)`` pairs."""

    def __init__(self, source_id: str, timeout: float = 20.0) -> None:
        found = pylsl.resolve_byprop("source_id", source_id, 1, timeout)
        assert found, f"the Markers stream {source_id!r} did not appear"
        self.inlet = pylsl.StreamInlet(found[0])
        self.inlet.open_stream(5.0)
        self.seen: list[tuple[float, dict]] = []

    def drain(self) -> list[tuple[float, dict]]:
        new = []
        while True:
            sample, ts = self.inlet.pull_sample(0.0)
            if ts is None:
                break
            new.append((ts, json.loads(sample[0])))
        self.seen.extend(new)
        return new

    def wait_for(self, event: str, timeout: float) -> tuple[float, dict] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ts, payload in self.drain():
                if payload.get("event") == event:
                    return ts, payload
            time.sleep(0.02)
        return None


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
