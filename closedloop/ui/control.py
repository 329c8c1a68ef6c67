"""The control path from the browser views into the run: pause, resume, stop.

The views' server checks the operator's token; the run trusts only its own end of a local
socket. Two transports, one line protocol (one JSON object per line each way):

- ``run --ui``: a socket pair made by the run, one end handed to the UI process it starts (no
  address at all: nothing else on the machine can reach it);
- ``run --control PATH``: a Unix-domain socket at ``PATH``, created with mode 0600 (only the
  user running the session may connect), for a standalone ``closedloop ui --control PATH``.

Neither is reachable from another host, and nothing on the LSL network can pause or resume
stimulation. A request ``{"action": "pause"}`` calls ``LiveSession.pause(source="ui")``, which
holds triggering and has the loop write a ``pause`` marker to the Markers stream and the
recording; the reply is ``{"ok": true, "action": "pause"}``, or ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path

from closedloop.errors import StreamError, UsageError

logger = logging.getLogger("closedloop.ui.control")

ACTIONS = ("pause", "resume", "stop")
#: Longest request line accepted (a request is a few dozen bytes).
MAX_LINE = 4096
#: Who the run names in the control markers.
SOURCE = "ui"


def _handle(session, line: bytes) -> dict:
    try:
        request = json.loads(line.decode("utf-8"))
        action = request["action"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return {"ok": False, "error": 'expected a JSON object {"action": "pause" | "resume" | "stop"}'}
    if action not in ACTIONS:
        return {"ok": False, "error": f"unknown action {action!r}; accepted: {', '.join(ACTIONS)}"}
    getattr(session, action)(source=SOURCE)
    return {"ok": True, "action": action}


class ControlServer:
    """The run's side: carries out requests arriving on local sockets on a :class:`LiveSession`.

    Each connection is served by a thread of its own (requests are rare: one per click).
    """

    def __init__(self, session) -> None:
        self.session = session
        self.path: Path | None = None
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self.requests = 0

    def serve(self, conn: socket.socket) -> None:
        """Serve one connected socket (the run's end of a socket pair) until it closes."""
        self._conns.append(conn)
        t = threading.Thread(target=self._serve, args=(conn,), name="closedloop-control", daemon=True)
        self._threads.append(t)
        t.start()

    def listen(self, path: str | os.PathLike) -> Path:
        """Open a Unix-domain control socket at ``path`` (mode 0600); refused if ``path`` exists."""
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise UsageError(f"--control {str(path)!r} already exists; give a path that does not exist "
                             "(the run creates the socket and removes it at the end).")
        if not path.parent.is_dir():
            raise UsageError(f"--control {str(path)!r}: its folder does not exist.")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(path))
        except OSError as exc:
            listener.close()
            raise UsageError(f"--control {str(path)!r}: cannot create the socket ({exc.strerror or exc}).") from exc
        finally:
            os.umask(old)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        listener.listen(4)
        self._listener, self.path = listener, path
        t = threading.Thread(target=self._accept, name="closedloop-control-accept", daemon=True)
        self._threads.append(t)
        t.start()
        return path

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while not self._closed.is_set():
            try:
                data = conn.recv(1024)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = _handle(self.session, line)
                self.requests += 1
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    return
            if len(buf) > MAX_LINE:
                return

    def close(self) -> None:
        """Close every socket (the UI process sees its control end close) and remove the path."""
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for t in self._threads:
            t.join(timeout=2)
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


class ControlClient:
    """The UI's side: sends one request at a time and waits for the reply."""

    def __init__(self, conn: socket.socket, description: str) -> None:
        self.conn = conn
        self.description = description
        self._lock = threading.Lock()
        self._buf = b""
        self.closed = False

    @classmethod
    def from_fd(cls, fd: int) -> ControlClient:
        """The UI process's end of the run's socket pair (``--control-fd``)."""
        try:
            conn = socket.socket(fileno=fd)
        except OSError as exc:
            raise UsageError(f"--control-fd {fd} is not an open socket ({exc.strerror or exc}).") from exc
        return cls(conn, "the run that started this ui")

    @classmethod
    def connect(cls, path: str | os.PathLike) -> ControlClient:
        """Connect to a run's ``--control PATH`` socket."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(path))
        except OSError as exc:
            conn.close()
            raise StreamError(f"cannot connect to the run's control socket {str(path)!r} "
                              f"({exc.strerror or exc}); start the run with --control {path}.") from exc
        return cls(conn, f"the run's control socket {str(path)}")

    def request(self, action: str, timeout_s: float = 3.0) -> dict:
        """Ask the run to ``action``; the run's reply, or ``{"ok": false, "error": ...}``."""
        with self._lock:
            if self.closed:
                return {"ok": False, "error": "the run is no longer connected"}
            try:
                self.conn.settimeout(timeout_s)
                self.conn.sendall(json.dumps({"action": action}).encode() + b"\n")
                while b"\n" not in self._buf:
                    data = self.conn.recv(1024)
                    if not data:
                        self.closed = True
                        return {"ok": False, "error": "the run closed the control connection"}
                    self._buf += data
                line, self._buf = self._buf.split(b"\n", 1)
                return json.loads(line)
            except (OSError, ValueError) as exc:
                return {"ok": False, "error": f"no reply from the run ({exc})"}

    def wait_closed(self) -> None:
        """Block until the run closes its end (used to end ``run --ui``'s UI with its run).

        Polls the socket without reading from it: a reply waiting for :meth:`request` stays there.
        """
        import select
        import time

        poller = select.poll()
        poller.register(self.conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        while not self.closed:
            events = poller.poll(500)
            if not events:
                continue
            if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in events):
                return
            try:
                data = self.conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except OSError:
                return
            if not data:
                return
            time.sleep(0.05)  # a reply is waiting for request(); look again shortly

    def close(self) -> None:
        self.closed = True
        self.conn.close()
