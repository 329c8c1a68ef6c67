"""Test outlets that live in their own process, as amplifier software does.

An outlet the tests push through (an amplifier, a vendor driver, a State stream) runs in a child
process started with ``spawn``: the parent keeps a plain object whose attributes (``sent``,
``t0``, ``pushed`` ...) follow the child's as it reports them over a pipe. :meth:`close` stops
the pushing and ends the child; the stream then disappears the way it does when an amplifier
app exits, with its sockets closed by the system.

Why not a thread in the pytest process: destroying a liblsl 1.18 outlet that a consumer in
another process is connected to, while another thread of the same process pulls from an inlet,
can crash the process with SIGSEGV inside ``lsl_destroy_outlet`` (seen here once in about four
full runs of the suite, in ``test_identity``; liblsl's sample-factory teardown, sccn/liblsl#218).
A crash in a child only ends that child; the outlet is not destroyed there at all (``os._exit``).

A subclass keeps its configuration in picklable attributes (arrays, numbers, module-level
callables), creates its outlet in :meth:`_open` and pushes in :meth:`_loop` until ``stop`` is
set, reporting with :meth:`_set`, :meth:`_append` and :meth:`_store`.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

_CTX = multiprocessing.get_context("spawn")

#: Attributes that exist only in the parent (never pickled into the child).
_PARENT_ONLY = ("_proc", "_conn", "_reader", "_finished")


class HostedOutlet:
    """Base of an outlet pushed from a child process (see the module docstring)."""

    def _open(self) -> None:  # in the child
        raise NotImplementedError

    def _loop(self, stop) -> None:  # in the child
        raise NotImplementedError

    # -- reporting (child -> parent) ----------------------------------------------------------
    def _set(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)
        self._send(("set", values))

    def _append(self, name: str, item: Any) -> None:
        getattr(self, name).append(item)
        self._send(("append", name, item))

    def _store(self, name: str, key: Any, value: Any) -> None:
        getattr(self, name)[key] = value
        self._send(("store", name, key, value))

    def _send(self, message: tuple) -> None:
        conn = getattr(self, "_child_conn", None)
        if conn is not None:
            try:
                conn.send(message)
            except OSError:  # the test process is gone
                os._exit(3)

    # -- the parent's side ------------------------------------------------------------------------
    def start(self, ready_s: float = 60.0, *, paused: bool = False):
        """Start the child and return once its outlet exists (discoverable); with ``paused`` it
        pushes nothing until :meth:`go`."""
        self._stop_event = _CTX.Event()
        self._go_event = _CTX.Event()
        if not paused:
            self._go_event.set()
        receive, send = _CTX.Pipe(duplex=False)
        self._child_conn = send
        self._parent_pid = os.getpid()
        proc = _CTX.Process(target=_host, args=(self,), name=type(self).__name__, daemon=True)
        proc.start()
        del self._child_conn
        send.close()
        self._proc, self._conn = proc, receive
        if not receive.poll(ready_s):
            proc.kill()
            raise RuntimeError(f"{type(self).__name__}: the outlet process did not start in {ready_s:.0f} s")
        try:
            first = receive.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeError(
                f"{type(self).__name__}: the outlet process ended before its outlet existed "
                f"(exit code {proc.exitcode})"
            ) from None
        if first[0] == "failed":
            proc.join(5)
            raise RuntimeError(f"{type(self).__name__}: the outlet process failed: {first[1]}")
        self._finished = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"{type(self).__name__}-reports", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "set":
                for key, value in message[1].items():
                    setattr(self, key, value)
            elif kind == "append":
                getattr(self, message[1]).append(message[2])
            elif kind == "store":
                getattr(self, message[1])[message[2]] = message[3]
            elif kind == "finished":
                self._finished.set()

    def go(self) -> None:
        """Start pushing (after ``start(paused=True)``)."""
        self._go_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until a stream that is not looped has pushed all of it (the outlet stays up until
        :meth:`close`); True when it has."""
        return self._finished.wait(timeout)

    def close(self) -> None:
        """Stop pushing and end the child: the stream is gone when this returns."""
        proc = getattr(self, "_proc", None)
        if proc is None:
            return
        self._stop_event.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        self._reader.join(5)
        self._conn.close()
        self._proc = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in _PARENT_ONLY}


def _orphan_watch(parent: int) -> None:
    """End the child when the test process is gone (it died without closing its outlets)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(3)


def _host(pusher: HostedOutlet) -> None:
    conn = pusher._child_conn
    threading.Thread(target=_orphan_watch, args=(pusher._parent_pid,), daemon=True).start()
    try:
        pusher._open()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        conn.close()
        os._exit(1)
    conn.send(("ready",))
    code = 0
    try:
        while not pusher._go_event.wait(0.05):
            if pusher._stop_event.is_set():
                break
        else:
            pusher._loop(pusher._stop_event)
    except BaseException:  # noqa: BLE001 - printed; the parent sees the child end
        import traceback

        traceback.print_exc()
        code = 1
    # a stream that was not looped stays up (its last samples reach the consumers) until closed
    conn.send(("finished",))
    pusher._stop_event.wait()
    conn.close()
    # no outlet destructor: the process ending takes the stream away (see the module docstring)
    os._exit(code)
