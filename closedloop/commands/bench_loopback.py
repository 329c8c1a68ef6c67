"""``closedloop bench loopback``: timing qualification with the TTL output looped back into the
amplifier (../shared/CONTRACTS.md, "Loopback qualification"). Options and printing only; the
work is in :mod:`closedloop.bench.loopback` (analysis), :mod:`closedloop.bench.loopback_live`
(the live run) and :mod:`closedloop.bench.loopback_report` (HTML)."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

from closedloop.errors import ClosedLoopError, DataError, StreamError, UsageError

DESCRIPTION = (
    "Timing qualification on the lab's own hardware. Wire the TTL box's output into the amplifier's trigger "
    "input (and, for the phase check, a function generator's sine into an EEG input); this runs the protocol "
    "live with TTL pulses on --serial, records the session, finds each pulse's rising edge in "
    "--trigger-channel and reports the loop-back delay on the amplifier's sample clock (edge time minus "
    "planned delivery time: p50, p95, p99, max, bootstrap 95 % confidence intervals), the pulses planned, "
    "sent and found (missed pulses and extra edges counted), and with --signal-channel the true phase at "
    "each edge against the target."
)
EPILOG = (
    "Re-analyse a recorded session without running anything: --from-xdf FILE.xdf (a recording of "
    "`closedloop run --serial PORT --record FILE.xdf` or of this command's --record; its FILE.xdf.summary.json, "
    "when present, adds the serial log and the engine's counts). Try it without hardware: --virtual runs "
    "against a virtual looped-back amplifier (closedloop bench virtual-amp). Exit 3 when the trigger channel "
    "is missing, never rises (wiring), or has more edges than pulses beyond a few strays (a second source "
    "on the line); the pulses found are reported first."
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    from closedloop.bench import loopback as lb

    p.description = DESCRIPTION
    p.epilog = EPILOG
    p.add_argument("--protocol", "-p", metavar="P", help="protocol file or preset (required for a live run)")
    src = p.add_argument_group("input stream (one of; as closedloop run)")
    src.add_argument("--stream-name", metavar="N", help="the input stream's name")
    src.add_argument("--stream-type", metavar="T", help="the input stream's type (default EEG)")
    src.add_argument("--source-id", metavar="ID", help="the input stream's source_id (most specific)")
    p.add_argument("--resolve-timeout", type=float, default=10.0, metavar="S", help="seconds to wait for the stream (default 10)")
    p.add_argument("--serial", metavar="PORT", help="serial port of the TTL box (e.g. /dev/ttyUSB0)")
    p.add_argument("--ttl-width", type=float, default=0.005, metavar="S",
                   help="TTL pulse width in seconds (default 0.005; keep it above two sampling steps)")
    p.add_argument("--trigger-channel", metavar="NAME", help="the amplifier's trigger channel (required; TRIG with --virtual)")
    edge = p.add_mutually_exclusive_group()
    edge.add_argument("--trigger-code", type=int, metavar="N", help="count an edge when the lines of this code rise (default: "
                                                        "any nonzero level)")
    edge.add_argument("--trigger-threshold", type=float, metavar="X",
                      help="count an edge when the level rises above this (a TTL into an analog input)")
    p.add_argument("--signal-channel", metavar="NAME",
                   help="EEG input carrying a function generator's sine (or EEG): the true phase at each edge "
                        "against the target (the ground truth of bench accuracy)")
    p.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds of live loop (default 60)")
    p.add_argument("--record", metavar="FILE.xdf", help="keep the session's XDF recording here (default: a temporary file, removed)")
    p.add_argument("--from-xdf", metavar="FILE", help="analyse this recorded session instead of running live")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write the figures (and every pulse) to this JSON file")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report (histogram, timeline, phase rose)")
    p.add_argument("--max-delay-ms", type=float, default=lb.MAX_DELAY_S * 1e3, metavar="MS",
                   help=f"edges are searched within this of a planned pulse (default {lb.MAX_DELAY_S * 1e3:g})")
    p.add_argument("--window-ms", type=float, default=lb.WINDOW_S * 1e3, metavar="MS",
                   help="an edge pairs with a pulse within this of its plan plus the typical delay "
                        f"(default {lb.WINDOW_S * 1e3:g})")
    p.add_argument("--no-early-check", action="store_true",
                   help="run the whole --duration even when the first pulses never reach the trigger channel "
                        "(by default the run stops 1 s after the 5th pulse without an edge: a wiring fault)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for sham phases and interval jitter")
    p.add_argument("--raw-timestamps", action="store_true", help="as closedloop run --raw-timestamps")
    p.add_argument("--realtime", action="store_true", help="run the loop under real-time scheduling, as closedloop "
                                                           "run --realtime")
    virt = p.add_argument_group("virtual looped-back amplifier (no hardware)")
    virt.add_argument("--virtual", action="store_true",
                      help="start a virtual amplifier whose trigger input is wired to a pseudo-terminal TTL port, "
                           "and qualify against it (no --serial or stream selection)")
    virt.add_argument("--virtual-signal", default="sine", metavar="SIGNAL",
                      help="'sine' (default: a function generator's sine at the middle of the protocol's band on the "
                           "protocol's channel, which is then the --signal-channel) or a recording to loop")
    virt.add_argument("--virtual-sfreq", type=float, default=1000.0, metavar="HZ", help="its rate with the sine (default 1000 Hz)")
    virt.add_argument("--virtual-sine-hz", type=float, default=None, metavar="HZ",
                      help="the sine's frequency (default: the middle of the protocol's band, moved off a whole number "
                           "of samples per period so that the pulses land at every point of the sampling step)")
    virt.add_argument("--virtual-delay-ms", type=float, default=0.0, metavar="MS",
                      help="a constant delay of its trigger line, ms (default 0)")


def _positive(value: float, option: str) -> float:
    if not (value is not None and math.isfinite(value) and value > 0):
        raise UsageError(f"{option} must be a positive number, got {value!r}.")
    return float(value)


def _protocol_for_xdf(args: argparse.Namespace, data):
    from closedloop.errors import ProtocolError
    from closedloop.protocol import load_protocol, parse_protocol

    if args.protocol:
        return load_protocol(args.protocol)
    stored = data.protocol_data
    if stored is not None:
        try:
            return parse_protocol({k: v for k, v in stored.items() if k != "source"}, str(data.path) + ".summary.json")
        except ProtocolError:
            pass
    name = next((str(p["protocol"]) for _, p in data.markers if p.get("protocol")), "")
    if name:
        try:
            return load_protocol(name)
        except ProtocolError:
            pass
    return None


def generator_hz(band_hz: tuple[float, float], sfreq: float) -> float:
    """A sine frequency for the virtual amplifier: the band's middle, moved a little when a period
    (or two to four) would be a whole number of samples, which would put every pulse at the same
    point of the sampling step (its delay would then show one fixed part of the step, not the spread)."""
    hz = round((band_hz[0] + band_hz[1]) / 2.0, 2)
    for _ in range(8):
        periods = [k * sfreq / hz for k in range(1, 5)]
        if all(abs(p - round(p)) > 0.01 for p in periods):
            break
        hz = round(hz * 1.03, 2)
    return hz


def _live(args: argparse.Namespace, protocol, record: Path, trigger_channel: str, signal_channel: str | None, rule):
    """Run live (against the virtual amplifier with --virtual); returns the stream's source_id."""
    from closedloop.bench.loopback_live import VirtualAmplifierProcess, run_session

    common = {"protocol": protocol, "record": record, "trigger_channel": trigger_channel,
              "signal_channel": signal_channel, "rule": rule, "early_check": not args.no_early_check,
              "ttl_width_s": args.ttl_width, "duration_s": args.duration,
              "resolve_timeout_s": args.resolve_timeout, "seed": args.seed, "raw_timestamps": args.raw_timestamps,
              "realtime": args.realtime}
    if not args.virtual:
        run_session(serial=args.serial, stream_name=args.stream_name, stream_type=args.stream_type,
                    source_id=args.source_id, **common)
        return args.source_id or args.stream_name
    # real-time when the system allows it: hardware samples its trigger input on time however busy
    # the machine is, and the virtual amplifier (a few per cent of a core) should too
    options = ["--delay-ms", f"{args.virtual_delay_ms:g}", "--realtime"]
    if args.virtual_signal == "sine":
        hz = args.virtual_sine_hz or generator_hz((protocol.band.low_hz, protocol.band.high_hz), args.virtual_sfreq)
        options += ["--channel", protocol.signal.channel, "--sfreq", f"{args.virtual_sfreq:g}", "--sine-hz", f"{hz:g}"]
    else:
        options += ["--signal", args.virtual_signal]
    amp = VirtualAmplifierProcess(options, duration_s=args.duration + 60.0)
    print(f"bench loopback: starting a virtual looped-back amplifier ({args.virtual_signal}) ...", file=sys.stderr)
    with amp:
        run_session(serial=amp.port, source_id=amp.source_id, **common)
    return amp.source_id


def run_command(args: argparse.Namespace) -> int:
    import logging

    # the library's warnings (narrow pulses, refused real-time scheduling) as this command's notes
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("bench loopback: note: %(message)s"))
    logger = logging.getLogger("closedloop")
    logger.addHandler(handler)
    temporary: list[Path] = []
    try:
        return _run(args, temporary)
    finally:
        logger.removeHandler(handler)
        for folder in temporary:  # a recording nobody asked to keep, whether the run got far or not
            shutil.rmtree(folder, ignore_errors=True)


def _run(args: argparse.Namespace, temporary: list[Path]) -> int:
    from closedloop.bench import loopback as lb
    from closedloop.bench.common import machine_info, write_json
    from closedloop.commands._tables import print_table
    from closedloop.bench.loopback_report import summary_rows, write_report

    rule = lb.EdgeRule(code=args.trigger_code, threshold=args.trigger_threshold)
    max_delay_s = _positive(args.max_delay_ms, "--max-delay-ms") / 1e3
    window_s = _positive(args.window_ms, "--window-ms") / 1e3
    if args.report and Path(args.report).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--report must name an .html file, got {args.report!r}.")
    trigger_channel = args.trigger_channel or ("TRIG" if args.virtual else None)
    if not trigger_channel:
        raise UsageError("--trigger-channel is required: the amplifier channel the TTL box's output is wired into.")
    signal_channel = args.signal_channel
    stream_error = None
    removable: Path | None = None
    if args.from_xdf:
        if args.virtual or args.serial:
            raise UsageError("--from-xdf analyses a recorded session; leave out --serial and --virtual.")
        data = lb.load_xdf(args.from_xdf, trigger_channel=trigger_channel, signal_channel=signal_channel,
                           stream=args.source_id or args.stream_name or args.stream_type)
        protocol = _protocol_for_xdf(args, data)
        source = "xdf"
    else:
        from closedloop.protocol import load_protocol

        if not args.protocol:
            raise UsageError("--protocol is required for a live run (a protocol file or preset name).")
        if args.virtual:
            if args.serial or args.source_id or args.stream_name or args.stream_type:
                raise UsageError("--virtual makes its own amplifier and TTL port; leave out --serial and the "
                                 "stream options.")
            from closedloop.lsl.config import use_loopback_config

            use_loopback_config()  # before pylsl loads: the virtual amplifier stays on this machine
        elif not args.serial:
            raise UsageError("--serial PORT is required for a live run: the TTL box's serial port (or use --virtual, "
                             "or --from-xdf FILE to analyse a recording).")
        protocol = load_protocol(args.protocol)
        if protocol.kind != "phase":
            raise UsageError(f"protocol {protocol.name!r} is a {protocol.kind!r} protocol; the loop-back "
                             'qualification needs one that triggers (kind = "phase").')
        duration = _positive(args.duration, "--duration")
        baseline = protocol.trigger.baseline_s
        if duration < baseline + 5.0:
            raise UsageError(f"--duration {duration:g} s leaves too little time to trigger after the protocol's "
                             f"baseline_s of {baseline:g} s; give at least {baseline + 5.0:g} s.")
        if args.virtual and args.virtual_signal == "sine" and signal_channel is None:
            signal_channel = protocol.signal.channel
        if args.record:
            record = Path(args.record)
            if not record.parent.is_dir():
                raise UsageError(f"the folder of --record, {str(record.parent)!r}, does not exist; create it first.")
        else:
            removable = record = Path(tempfile.mkdtemp(prefix="closedloop-loopback-")) / "session.xdf"
            temporary.append(record.parent)
        print(f"bench loopback: {protocol.name!r} live for {duration:g} s (baseline {baseline:g} s); TTL pulses "
              f"of {args.ttl_width * 1e3:g} ms; trigger channel {trigger_channel!r}.", file=sys.stderr)
        try:
            stream = _live(args, protocol, record, trigger_channel, signal_channel, rule)
        except StreamError as exc:
            if not record.exists():
                raise
            stream_error = exc  # the stream was lost: report what was recorded, then exit 4
            stream = None
        data = lb.load_xdf(record, trigger_channel=trigger_channel, signal_channel=signal_channel, stream=stream)
        source = "virtual" if args.virtual else "live"
    summary = data.summary or {}
    engine = summary.get("engine") or {}
    pulses_per_trigger = protocol.trigger.pulses if protocol is not None else 1
    n_planned = engine["triggers_planned"] * pulses_per_trigger if "triggers_planned" in engine else None
    band = engine.get("band_hz") or ((protocol.band.low_hz, protocol.band.high_hz) if protocol is not None else None)
    result = lb.analyse(
        data, rule=rule, pulse_interval_s=protocol.trigger.pulse_interval_s if protocol is not None else None,
        band_hz=tuple(band) if band else None, n_planned=n_planned, max_delay_s=max_delay_s, window_s=window_s,
    )
    result["source"] = source
    result["protocol"] = protocol.name if protocol is not None else None
    result["dropped_by_reason"] = summary.get("dropped_by_reason")
    result["ttl"] = {k: v for k, v in (summary.get("ttl") or {}).items() if k != "sent"} or None
    result["machine"] = machine_info()
    if summary.get("early_stop"):
        result["early_stop"] = summary["early_stop"]
        print(f"bench loopback: {summary['early_stop']} (--no-early-check runs on).", file=sys.stderr)
    if removable is not None:
        result["recording"] = None
        result["notes"].append("the session's recording was temporary and is removed; keep it with --record FILE.xdf "
                               "to analyse it again (--from-xdf).")
    title = (f"bench loopback: {result['protocol']!r}, {source}, trigger channel {result['trigger_channel']!r} "
             f"({result['edge_rule']}), {result['stream']['sfreq']:g} Hz")
    from rich.markup import escape

    print_table(escape(title), [(escape(k), escape(v)) for k, v in summary_rows(result)])
    for note in result["notes"]:
        print(f"bench loopback: note: {note}", file=sys.stderr)
    write_json(args.json_path, result)
    if args.report:
        path = write_report(args.report, result)
        print(f"bench loopback: report written to {path}", file=sys.stderr)
    if stream_error is not None:
        raise stream_error
    if result["problem"]:
        raise DataError(result["problem"])
    if result["n_sent"] == 0:
        raise ClosedLoopError(
            f"no pulse was sent in {result['stream']['duration_s']:.0f} s: the protocol never triggered after its "
            "baseline (its gate stayed closed, or the signal channel is flat); run longer or check the EEG input."
        )
    return 0
