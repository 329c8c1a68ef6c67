"""User callbacks of a live session, run outside the loop thread.

The loop hands each delivered :class:`~closedloop.records.Trigger` and each
:class:`~closedloop.records.State` to a bounded queue (a non-blocking put, about a microsecond)
and goes on; a thread of its own calls the user's functions. A slow callback only makes the
queue fill up: what does not fit is dropped and counted, a callback that raises is counted and
logged once, and neither ever delays or stops a trigger.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["CallbackDispatcher"]

logger = logging.getLogger("closedloop.session")

_STOP = object()


class CallbackDispatcher:
    """Calls ``on_trigger`` and ``on_state`` functions from a thread of its own.

    Parameters
    ----------
    maxsize : int
        Items the queue holds; beyond it new items are dropped (and counted).
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"the callback queue size must be a whole number >= 1, got {maxsize!r}.")
        self.maxsize = maxsize
        self.trigger_callbacks: list[Callable] = []
        self.state_callbacks: list[Callable] = []
        self.counts = {
            kind: {"calls": 0, "dropped": 0, "errors": 0} for kind in ("trigger", "state")
        }
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._warned: set[int] = set()

    @property
    def wants_triggers(self) -> bool:
        return bool(self.trigger_callbacks)

    @property
    def wants_states(self) -> bool:
        return bool(self.state_callbacks)

    def add(self, kind: str, callback: Callable) -> None:
        if not callable(callback):
            raise TypeError(f"a {kind} callback must be callable, got {type(callback).__name__}.")
        (self.trigger_callbacks if kind == "trigger" else self.state_callbacks).append(callback)

    def start(self) -> None:
        if self._thread is None and (self.trigger_callbacks or self.state_callbacks):
            self._thread = threading.Thread(target=self._run, name="closedloop-callbacks", daemon=True)
            self._thread.start()

    def post(self, kind: str, item) -> None:
        """Loop thread: hand ``item`` over without waiting (dropped and counted when full)."""
        try:
            self._queue.put_nowait((kind, item))
        except queue.Full:
            self.counts[kind]["dropped"] += 1

    def _run(self) -> None:
        from closedloop import realtime

        realtime.background()
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                return
            kind, item = entry
            callbacks = self.trigger_callbacks if kind == "trigger" else self.state_callbacks
            counts = self.counts[kind]
            for callback in callbacks:
                counts["calls"] += 1
                try:
                    callback(item)
                except Exception:
                    counts["errors"] += 1
                    if id(callback) not in self._warned:  # once per callback, with the traceback
                        self._warned.add(id(callback))
                        logger.exception("the %s callback %r raised; the session goes on", kind, callback)

    def stop(self, timeout: float = 5.0) -> None:
        """Call what is queued already (up to ``timeout``), then end the thread."""
        if self._thread is None:
            return
        while True:
            try:
                self._queue.put(_STOP, timeout=timeout)
                break
            except queue.Full:  # pragma: no cover - a callback stuck for good
                break
        self._thread.join(timeout)
        self._thread = None

    def summary(self) -> dict:
        return {kind: dict(values) for kind, values in self.counts.items()}
