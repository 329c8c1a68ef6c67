"""Attaching the browser views to a running session and serving them until it ends.

:func:`find_session` resolves the session's streams: its status stream (by source_id, or the one
``ClosedLoopStatus`` stream visible), whose description names the input, State and Markers
streams; or, for an engine that publishes no status stream, a State stream given by source_id
(with ``--protocol`` for the participant's display). :func:`serve` runs the readers and the web
server until stopped, until ``duration_s`` or, with a control pair from ``run --ui``, until the
run closes its end.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass

from closedloop.errors import StreamError

logger = logging.getLogger("closedloop.ui")


@dataclass
class SessionStreams:
    """The resolved streams of one session (None: not found or not asked for)."""

    status: object | None
    state: object
    markers: object | None
    eeg: object | None
    notes: list[str]


def _resolve(source_id: str, timeout: float):
    import pylsl

    found = pylsl.resolve_byprop("source_id", source_id, 1, timeout)
    return found[0] if found else None


def _describe(info) -> str:
    return f"{info.name()!r} (source_id {info.source_id()!r}, host {info.hostname()!r})"


def find_session(*, status_source_id: str | None = None, state_source_id: str | None = None,
                 marker_source_id: str | None = None, input_source_id: str | None = None,
                 timeout: float = 10.0) -> SessionStreams:
    """Resolve a session's streams (see the module's description); StreamError when it cannot."""
    import pylsl

    from closedloop.status import STATUS_TYPE

    notes: list[str] = []
    status = None
    if status_source_id:
        status = _resolve(status_source_id, timeout)
        if status is None:
            raise StreamError(f"no status stream with source_id {status_source_id!r} appeared within "
                              f"{timeout:g} s; is the run started?")
    elif not state_source_id:
        found = pylsl.resolve_byprop("type", STATUS_TYPE, 0, timeout)
        if not found:
            raise StreamError(
                f"no closedloop session found within {timeout:g} s (no {STATUS_TYPE} stream). Start "
                "closedloop run first, or give --status-source-id, or --state-source-id for a State stream.")
        if len(found) > 1:
            listing = "; ".join(_describe(i) for i in found)
            raise StreamError(f"{len(found)} closedloop sessions are running: {listing}. "
                              "Choose one with --status-source-id.")
        status = found[0]
    ids = {"state_source_id": state_source_id, "marker_source_id": marker_source_id,
           "input_source_id": input_source_id}
    if status is not None:
        inlet = pylsl.StreamInlet(status)
        try:
            full = inlet.info(timeout)
        except Exception as exc:
            raise StreamError(f"the status stream {_describe(status)} did not answer: {exc}.") from exc
        finally:
            del inlet
        streams = full.desc().child("streams")
        for key in ids:
            if not ids[key]:
                ids[key] = streams.child_value(key) or None
    if not ids["state_source_id"]:
        raise StreamError("the session's State stream is unknown; give --state-source-id.")
    state = _resolve(ids["state_source_id"], timeout)
    if state is None:
        raise StreamError(f"no State stream with source_id {ids['state_source_id']!r} appeared within {timeout:g} s.")
    markers = _resolve(ids["marker_source_id"], timeout) if ids["marker_source_id"] else None
    if markers is None:
        notes.append("no Markers stream: triggers are not shown"
                     + (f" (source_id {ids['marker_source_id']!r} not found)" if ids["marker_source_id"] else ""))
    eeg = _resolve(ids["input_source_id"], timeout) if ids["input_source_id"] else None
    if eeg is None:
        notes.append("no input EEG stream: traces, quality, spectrum and true phases are not shown"
                     + (f" (source_id {ids['input_source_id']!r} not found)" if ids["input_source_id"] else ""))
    return SessionStreams(status, state, markers, eeg, notes)


def serve(streams: SessionStreams, *, host: str = "127.0.0.1", port: int = 0, token: str,
          protocol=None, control=None, control_note: str = "", owner=None,
          duration_s: float | None = None, on_ready=None) -> None:
    """Read the session's streams and serve the views until stopped (Ctrl-C, SIGTERM, ``duration_s``,
    or ``owner``, a :class:`closedloop.ui.control.ControlClient` of ``run --ui``, closing)."""
    from closedloop.ui.feeds import EEGReader, Hub, MarkerReader, StateReader, StatusReader
    from closedloop.ui.server import ViewServer

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = Hub(loop, protocol=protocol, view_only=control is None, control_note=control_note)
        server = ViewServer(hub, token, control, host=host, port=port)
        bound = await server.start()
        readers = []
        eeg = EEGReader(streams.eeg, hub) if streams.eeg is not None else None
        if streams.status is not None:
            readers.append(StatusReader(streams.status, hub))
        readers.append(StateReader(streams.state, hub))
        if streams.markers is not None:
            readers.append(MarkerReader(streams.markers, hub, eeg.truth_queue if eeg is not None else None))
        if eeg is not None:
            readers.append(eeg)
        for reader in readers:
            reader.start()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, done.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        if owner is not None:
            threading.Thread(target=lambda: (owner.wait_closed(), loop.call_soon_threadsafe(done.set)),
                             name="closedloop-ui-owner", daemon=True).start()
        if duration_s is not None:
            loop.call_later(duration_s, done.set)
        if on_ready is not None:
            on_ready(server.urls(), bound)
        try:
            await done.wait()
        finally:
            for reader in readers:
                reader.stop()
            await server.stop()
            for reader in readers:
                reader.join(timeout=2)
            if eeg is not None:
                eeg.close()

    asyncio.run(main())
