"""``closedloop sound``: the output devices with their latency, and a test burst on one of them."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from closedloop.errors import UsageError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test", metavar="DEVICE",
                   help="play test bursts on this device (index, name or a unique part of one; 'default') "
                        "and print its measured latency and clock")
    p.add_argument("--protocol", "-p", default="so-upstate-clas",
                   help="whose [sound] stimulus to play (file or preset; default so-upstate-clas)")
    p.add_argument("--count", type=int, default=3, help="bursts to play with --test (default 3)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between the bursts (default 0.5)")
    p.add_argument("--tone", type=float, default=0.0, metavar="SECONDS",
                   help="with --test: then the protocol's feedback tone for this long, swept across its feedback_range")
    p.add_argument("--json", help="write what was found to this JSON file")


def run_command(args: argparse.Namespace) -> int:
    from closedloop.sound import output_devices

    if args.test is None:
        devices = output_devices()
        if not devices:
            print("closedloop sound: no output device found (PortAudio lists none).", file=sys.stderr)
        else:
            print(f"{'':2}{'index':>5}  {'name':<34} {'host API':<12} {'ch':>3} {'rate Hz':>8} "
                  f"{'latency low/high ms':>20}")
            for d in devices:
                mark = "*" if d["default"] else " "
                print(f"{mark:2}{d['index']:>5}  {d['name'][:34]:<34} {d['hostapi'][:12]:<12} {d['channels']:>3} "
                      f"{d['samplerate_hz']:>8g} {d['low_latency_ms']:>9.1f} / {d['high_latency_ms']:<8.1f}")
            print("(* the default output; 'closedloop sound --test DEVICE' plays test bursts and measures it)")
        if args.json:
            _write(args.json, {"devices": devices})
        return 0
    if args.count < 1 or args.count > 100:
        raise UsageError(f"--count must be a whole number from 1 to 100, got {args.count}.")
    if not (math.isfinite(args.interval) and 0.1 <= args.interval <= 10.0):
        raise UsageError(f"--interval must be 0.1 to 10 seconds, got {args.interval}.")
    if not (math.isfinite(args.tone) and 0.0 <= args.tone <= 600.0):
        raise UsageError(f"--tone must be 0 to 600 seconds, got {args.tone}.")
    result = _test(args)
    s = result["summary"]
    clock = s["clock"]
    print(f"closedloop sound: {s['device']!r} ({s['hostapi']}), {s['samplerate_hz']:g} Hz, "
          f"{s['block_frames']} frames per buffer.")
    print(f"  reported output latency {s['reported_latency_ms']:.2f} ms; callback to DAC at most "
          f"{s['callback_to_dac_ms']:.2f} ms; stimuli are queued {s['latency_ms']:.2f} ms ahead "
          "(run takes this off every plan).")
    print(f"  the device's clock: {clock['rate_hz']:.3f} frames per second of the LSL clock "
          f"({clock['rate_ppm']:+.1f} ppm), {clock['readings']} readings, {clock['outliers']} outliers.")
    print(f"  played {s['started']} of {args.count} bursts ({s['late']} late, {s['late_dropped']} dropped, "
          f"{s['underflows']} underflows).")
    print("  This is what the driver reports; the time to the ear is measured with a loop-back "
          "(README, \"Sound\").")
    if args.json:
        _write(args.json, result)
    return 0 if s["started"] == args.count and not s["callback_error"] else 1


def _test(args: argparse.Namespace) -> dict:
    import pylsl

    from closedloop.protocol import load_protocol
    from closedloop.records import State, Trigger
    from closedloop.sound import SoundStimulator

    protocol = load_protocol(args.protocol)
    stim = SoundStimulator.from_protocol(protocol, args.test)
    stim.feedback = args.tone > 0 and protocol.sound.tone != "off"
    with stim.start():
        start = pylsl.local_clock() + stim.latency_s + 0.2
        trigger = Trigger(seq=1, time_s=start, sample_ts=start, event="test", target_phase_deg=0.0,
                          phase_deg=0.0, amplitude=0.0, scheduled_s=start, crossing_s=start,
                          pulses=args.count, pulse_interval_s=args.interval, protocol=protocol.name)
        fields = stim.fire(trigger)
        end = start + (args.count - 1) * args.interval + protocol.sound.duration_ms * 1e-3 + 0.2
        while pylsl.local_clock() < end:
            time.sleep(0.05)
        if stim.feedback:
            low, high = protocol.sound.feedback_range
            t0 = pylsl.local_clock()
            while (t := pylsl.local_clock() - t0) < args.tone:
                x = 0.5 - 0.5 * math.cos(2.0 * math.pi * t / min(args.tone, 4.0))
                stim.on_state(State(t, math.nan, math.nan, low + (high - low) * x, False))
                time.sleep(0.02)
        onsets = stim.onset_log()
    return {"summary": stim.summary(), "onsets": onsets, "marker_fields": fields}


def _write(path: str, data: dict) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
