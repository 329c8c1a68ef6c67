"""``closedloop run``: the live loop on an LSL stream (:class:`closedloop.Session`)."""

from __future__ import annotations

import argparse
import sys


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", "-p", required=True, help="protocol file (.toml) or preset name")
    src = p.add_argument_group(
        "source", "the one input stream: it must match every selector given (type EEG if none is); only "
        "regularly sampled numeric streams are candidates; more than one match is refused (exit 4)"
    )
    src.add_argument("--stream-name", help="the input stream's name (exact)")
    src.add_argument("--stream-type", help="the input stream's type, any case (default EEG)")
    src.add_argument("--source-id", help="the input stream's source_id (exact; the most specific)")
    src.add_argument("--host", help="the host name of the machine publishing the input stream (any case)")
    src.add_argument("--units", metavar="UNIT",
                     help="the units of the input's voltage channels, overriding what the stream says: "
                          "V, mV, uV (or µV), nV, or mne-lsl's codes 0, -3, -6, -9")
    p.add_argument("--resolve-timeout", type=float, default=10.0, help="seconds to wait for the stream (default 10)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="end with exit 4 after this long without data (default 30 s)")
    p.add_argument("--record", help="record the session to this XDF file")
    p.add_argument("--record-stream", action="append", default=[], metavar="NAME_OR_SOURCE_ID",
                   help="with --record: also record every stream with this name or source_id (repeatable; "
                        "streams that appear later are picked up)")
    p.add_argument("--record-markers", action="store_true",
                   help="with --record: also record every marker stream visible (every stream of irregular rate)")
    p.add_argument("--marker-name", help="Markers stream name (default closedloop-markers)")
    p.add_argument("--marker-source-id", help="Markers stream source_id")
    p.add_argument("--state-name", help="State stream name (default closedloop-state)")
    p.add_argument("--state-source-id", help="State stream source_id")
    p.add_argument("--serial", help="serial port for TTL pulses (e.g. /dev/ttyUSB0)")
    p.add_argument("--ttl-width", type=float, default=0.005, help="TTL pulse width in seconds (default 0.005)")
    p.add_argument("--sound", metavar="DEVICE",
                   help="play the protocol's [sound] stimulus at each trigger (a feedback protocol: its tone) on this "
                        "output device, timed on the device's clock ('closedloop sound' lists devices; 'default')")
    p.add_argument("--monitor", action="store_true", help="live terminal monitor")
    p.add_argument("--realtime", action="store_true",
                   help="run the loop under real-time scheduling (Linux SCHED_FIFO) with locked memory, so that "
                        "other programs cannot delay it; needs root or CAP_SYS_NICE (refused: a note, normal priority)")
    p.add_argument("--realtime-priority", type=int, default=None, metavar="P",
                   help="SCHED_FIFO priority 1-98 with --realtime (default 70)")
    p.add_argument("--raw-timestamps", action="store_true",
                   help="time triggers from the stream's timestamps as they are; by default they are mapped onto the "
                        "amplifier's sample clock, which removes the jitter of drivers that stamp at push time")
    p.add_argument("--seed", type=int, default=0, help="seed for sham phases and interval jitter")
    p.add_argument("--summary-json", help="write the end-of-run summary to this JSON file")
    from closedloop.ui.launch import add_run_options

    add_run_options(p)  # --ui, --ui-port, --ui-host, --control, --status-name, --status-source-id


def session_options(args: argparse.Namespace) -> dict:
    """The :class:`closedloop.Session` keywords of ``closedloop run``'s options (same names)."""
    names = (
        "source_id", "stream_name", "stream_type", "host", "units", "resolve_timeout", "duration", "timeout",
        "record", "record_stream", "record_markers",
        "marker_name", "marker_source_id", "state_name", "state_source_id", "serial", "ttl_width", "sound",
        "monitor", "realtime", "realtime_priority", "raw_timestamps", "seed", "summary_json",
        "ui", "ui_port", "ui_host", "control", "status_name", "status_source_id",
    )
    return {name: getattr(args, name) for name in names}


def run_command(args: argparse.Namespace) -> int:
    from closedloop.session import Session

    session = Session(args.protocol, **session_options(args))
    summary = session.run()
    print(
        f"closedloop run: {summary['end_reason']}; {summary['samples']} samples, "
        f"{summary['dropped_samples']} dropped, {summary['triggers']} triggers "
        f"({summary['triggers_dropped']} dropped); latency p50 {summary['latency_ms_p50']:.3f} ms, "
        f"p99 {summary['latency_ms_p99']:.3f} ms.",
        file=sys.stderr,
    )
    checked = summary.get("units") or {}
    if checked.get("status") == "implausible":
        like = f"; the values look like {checked['looks_like']}" if checked.get("looks_like") else ""
        print(
            f"closedloop run: triggering was held for the whole session: the amplitude was implausible "
            f"for EEG (robust {checked['amplitude_uv']:.3g} µV{like}); see --units.",
            file=sys.stderr,
        )
    elif checked.get("status") == "pending" and summary["samples"] >= checked["window_s"] * summary["input"]["sfreq"]:
        print(
            "closedloop run: triggering was held for the whole session: the protocol's channels never "
            "carried a signal to judge its units by (flat or not finite).",
            file=sys.stderr,
        )
    sound = summary["stimulators"].get("SoundStimulator")
    if sound:
        print(
            f"closedloop run: sound on {sound['device']!r}: {sound['started']} stimuli played, {sound['cancelled']} "
            f"cancelled, {sound['late']} late, {sound['late_dropped']} dropped late, {sound['underflows']} underflows; "
            f"queued {sound['latency_ms']:.1f} ms ahead.",
            file=sys.stderr,
        )
    return 0
