"""User callbacks of a live session, run outside the loop thread.

The loop hands each delivered :class:`~closedloop.records.Trigger` and each
:class:`~closedloop.records.State` to a bounded queue (a non-blocking put, about a microsecond)
and goes on; a thread of its own per kind calls the user's functions, so a slow ``on_state``
never holds up ``on_trigger``. A slow callback only makes its queue fill up: what does not fit is
dropped and counted; a callback that raises is counted and logged once; neither ever delays or
stops a trigger.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["CallbackDispatcher"]

logger = logging.getLogger("closedloop.session")

_STOP = object()
KINDS = ("trigger", "state")


class _Channel:
    """One kind of callback: its functions, bounded queue, thread and counts."""

    def __init__(self, kind: str, maxsize: int) -> None:
        self.kind = kind
        self.callbacks: list[Callable] = []
        self.counts = {"calls": 0, "dropped": 0, "errors": 0}
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.thread: threading.Thread | None = None
        self._warned: set[int] = set()

    def start(self) -> None:
        if self.callbacks and self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"closedloop-on-{self.kind}", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        from closedloop import realtime

        realtime.background()
        counts = self.counts
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            for callback in self.callbacks:
                counts["calls"] += 1
                try:
                    callback(item)
                except Exception:
                    counts["errors"] += 1
                    if id(callback) not in self._warned:  # once per callback, with the traceback
                        self._warned.add(id(callback))
                        logger.exception("the %s callback %r raised; the session goes on", self.kind, callback)

    def stop(self, timeout: float) -> None:
        if self.thread is None:
            return
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:  # pragma: no cover - a callback stuck for good
            pass
        self.thread.join(timeout)
        self.thread = None


class CallbackDispatcher:
    """Calls ``on_trigger`` and ``on_state`` functions from threads of their own.

    Parameters
    ----------
    maxsize : int
        Items each queue holds; beyond it new items are dropped (and counted).
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"the callback queue size must be a whole number >= 1, got {maxsize!r}.")
        self.maxsize = maxsize
        self._channels = {kind: _Channel(kind, maxsize) for kind in KINDS}

    @property
    def wants_triggers(self) -> bool:
        return bool(self._channels["trigger"].callbacks)

    @property
    def wants_states(self) -> bool:
        return bool(self._channels["state"].callbacks)

    def add(self, kind: str, callback: Callable) -> None:
        if not callable(callback):
            raise TypeError(f"a {kind} callback must be callable, got {type(callback).__name__}.")
        self._channels[kind].callbacks.append(callback)

    def start(self) -> None:
        for channel in self._channels.values():
            channel.start()

    def post(self, kind: str, item) -> None:
        """Loop thread: hand ``item`` over without waiting (dropped and counted when full)."""
        channel = self._channels[kind]
        try:
            channel.queue.put_nowait(item)
        except queue.Full:
            channel.counts["dropped"] += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Call what is queued already (up to ``timeout`` per kind), then end the threads."""
        for channel in self._channels.values():
            channel.stop(timeout)

    def summary(self) -> dict:
        return {kind: dict(channel.counts) for kind, channel in self._channels.items()}
