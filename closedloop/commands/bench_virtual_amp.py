"""``closedloop bench virtual-amp``: a virtual looped-back amplifier, for trying the timing
qualification (``bench loopback``) and ``run --serial`` on a machine without the hardware."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
import uuid

from closedloop.errors import UsageError

#: GIL switch interval of the amplifier's process (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0001
#: SCHED_FIFO priority with --realtime: below the live loop's (closedloop.realtime.DEFAULT_PRIORITY).
REALTIME_PRIORITY = 60

DESCRIPTION = (
    "A virtual looped-back amplifier: an LSL EEG stream (a function generator's sine on one input, or "
    "a recording, looped) plus a trigger channel wired to a pseudo-terminal. Give the printed port to "
    "`closedloop run --serial PORT` (or `bench loopback --serial PORT`): each byte written to it shows in "
    "the trigger channel from the first sample at or after its arrival, as on an amplifier's trigger "
    "input. Stops on Ctrl-C or after --duration. `closedloop bench loopback --virtual` starts one by itself."
)


def _numbers(text: str, option: str) -> frozenset[int]:
    if not text:
        return frozenset()
    try:
        values = frozenset(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a comma-separated list of pulse numbers (1, 2, ...).") from None
    if any(v < 1 for v in values):
        raise UsageError(f"{option} numbers the pulses from 1; got {text!r}.")
    return values


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.add_argument("--signal", default="sine",
                   help="'sine' (default: a function generator's sine on one EEG input) or a recording to loop "
                        "(any format MNE reads, or XDF; its own rate and channels)")
    p.add_argument("--channel", default="O2", help="label of the sine's EEG input (default O2)")
    p.add_argument("--sfreq", type=float, default=1000.0, help="sampling rate with the sine, Hz (default 1000)")
    p.add_argument("--sine-hz", type=float, default=10.5,
                   help="sine frequency, Hz (default 10.5: not a whole number of samples per period, so that pulses "
                        "phase-locked to it land at every point of the sampling step)")
    p.add_argument("--sine-uv", type=float, default=50.0, help="sine amplitude, µV (default 50)")
    p.add_argument("--noise-uv", type=float, default=1.0, help="white noise on the sine, µV RMS (default 1)")
    p.add_argument("--chunk-size", type=int, default=None, help="samples per push (default: about 10 ms)")
    p.add_argument("--trigger-label", default="TRIG", help="label of the trigger channel (default TRIG)")
    p.add_argument("--name", default="closedloop-virtual-amp", help="stream name (default closedloop-virtual-amp)")
    p.add_argument("--source-id", default=None, help="stream source_id (default: closedloop-virtual-amp-<random>)")
    p.add_argument("--delay-ms", type=float, default=0.0,
                   help="constant delay of the trigger line, ms (a TTL box's or input stage's own latency; default 0)")
    faults = p.add_argument_group("faults of the trigger line (to test the analysis)")
    faults.add_argument("--miss-pulses", default="", metavar="N,N",
                        help="numbers (1, 2, ...) of the TTL pulses the line loses")
    faults.add_argument("--stray-after", default="", metavar="N,N",
                        help="a stray pulse (code 4, 5 ms) 100 ms after each of these TTL pulses: a second source")
    faults.add_argument("--stray-rate", type=float, default=0.0, metavar="HZ",
                        help="random stray pulses per second from a second source (default 0)")
    p.add_argument("--realtime", action="store_true",
                   help=f"run under real-time scheduling (SCHED_FIFO {REALTIME_PRIORITY}, below the live loop's), so "
                        "that the trigger input is read on time on a busy machine, as hardware does; refused "
                        "without root or CAP_SYS_NICE (a note, normal priority)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--summary-json", metavar="FILE",
                   help="at the end, write the counts (samples, TTL pulses received, lost, strays added, read too "
                        "late to show) to this JSON file")
    p.add_argument("--pty-fd", type=int, default=None,
                   help="the master end of a pseudo-terminal opened by the calling program (which gives the slave "
                        "to --serial); default: open one and print its slave's path")


def _signal_source(args: argparse.Namespace):
    from closedloop.bench.virtual_amp import LoopedSignal, SineGenerator

    if args.signal == "sine":
        if not (args.sfreq and args.sfreq > 0):
            raise UsageError(f"--sfreq must be a positive rate in Hz, got {args.sfreq!r}.")
        sine = SineGenerator(args.sfreq, frequency_hz=args.sine_hz, amplitude_uv=args.sine_uv, noise_uv=args.noise_uv)
        desc = f"{args.channel} = sine {args.sine_hz:g} Hz, {args.sine_uv:g} µV"
        return sine, [args.channel], float(args.sfreq), desc
    from closedloop.io import open_recording

    with open_recording(args.signal) as rec:
        data = rec.read(0, rec.n_samples)
        names, sfreq = list(rec.ch_names), rec.sfreq
    return LoopedSignal(data), names, sfreq, f"{len(names)} channels of {args.signal} (looped)"


def run_command(args: argparse.Namespace) -> int:
    from closedloop.bench.virtual_amp import LineFaults, VirtualAmplifier

    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}.")
    faults = LineFaults(
        delay_s=args.delay_ms / 1e3,
        miss_pulses=_numbers(args.miss_pulses, "--miss-pulses"),
        stray_after=_numbers(args.stray_after, "--stray-after"),
        stray_rate_hz=args.stray_rate,
    )
    source, names, sfreq, desc = _signal_source(args)
    rt = None
    if args.realtime:  # before the outlet and the thread exist: they inherit the policy
        from closedloop import realtime

        rt = realtime.request(REALTIME_PRIORITY, lock_memory=False)
        for note in rt.notes:
            print(f"virtual amplifier: note: {note}.", file=sys.stderr)
    source_id = args.source_id or f"closedloop-virtual-amp-{uuid.uuid4().hex[:10]}"
    amp = VirtualAmplifier(source, names, sfreq, source_id=source_id, name=args.name, chunk_size=args.chunk_size,
                           trigger_label=args.trigger_label, faults=faults, master_fd=args.pty_fd)
    done = threading.Event()

    def handler(signum, frame):
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # the reader thread gets the interpreter back at once
    amp.start()
    print(f"virtual amplifier {args.name!r} (source_id {source_id}): {desc}, plus {args.trigger_label} "
          f"(the trigger input), {sfreq:g} Hz in chunks of {amp.chunk_size}", flush=True)
    if amp.port:
        print(f"TTL port: {amp.port}   (closedloop run --serial {amp.port} --source-id {source_id} ...)", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else math.inf
    try:
        while not done.is_set() and time.monotonic() < deadline and amp.error is None:
            time.sleep(0.1)
    finally:
        amp.close()
    line = amp.line
    print(f"virtual amplifier: {amp.n_pushed} samples sent; {line.pulses_received} TTL pulses received, "
          f"{line.pulses_lost} lost (--miss-pulses), {line.strays} stray pulses added, {amp.collapsed_pulses} "
          "read too late to show.", file=sys.stderr)
    if args.summary_json:
        import json

        counts = {"samples": amp.n_pushed, "pulses_received": line.pulses_received, "pulses_lost": line.pulses_lost,
                  "strays": line.strays, "collapsed_pulses": amp.collapsed_pulses, "bytes_received": amp.bytes_received,
                  "realtime": rt.as_dict() if rt is not None else {"requested": False}, "error": amp.error}
        try:
            with open(args.summary_json, "w") as fh:
                json.dump(counts, fh, indent=2)
        except OSError as exc:
            raise UsageError(f"cannot write --summary-json {args.summary_json!r}: {exc.strerror or exc}.") from exc
    if amp.error:
        print(f"virtual amplifier: stopped early: {amp.error}", file=sys.stderr)
        return 1
    return 0
