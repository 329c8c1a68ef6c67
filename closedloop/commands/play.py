"""``closedloop play RECORDING``: stream a recording as a live LSL amplifier (:class:`closedloop.Player`)."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

from closedloop.checks import non_negative_float, positive_float, positive_int
from closedloop.errors import ClosedLoopError, StreamError
from closedloop.play import DEFAULT_CHUNK_SIZE, Player, default_source_id


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", metavar="RECORDING", help="any file MNE reads, or XDF")
    p.add_argument("--stream", metavar="S", help="XDF only: name or type of the stream to play")
    p.add_argument("--name", help="LSL stream name (default: the recording's file stem)")
    p.add_argument("--source-id", help="LSL source_id (default: closedloop-play-<file stem>)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"samples per push (default {DEFAULT_CHUNK_SIZE})",
    )
    p.add_argument("--speed", type=float, default=1.0, metavar="X", help="multiple of real time")
    p.add_argument(
        "--loop",
        action="store_true",
        help="start again at the end (marker 'boundary' at each wrap)",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="seconds of recording to play, then stop"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument(
        "--index-channel",
        action="store_true",
        help="channel 0 carries the sample index (0, 1, 2, ...) for checking drops",
    )
    p.add_argument(
        "--wait-consumers",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for a receiver of the data stream before the first sample "
        "(open a marker inlet before the data inlet to get every marker)",
    )


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    """SIGTERM and SIGINT: end playback cleanly."""
    raise _Terminated()


def run_command(args: argparse.Namespace) -> int:
    from closedloop.io import open_recording

    path = Path(args.recording)
    positive_int(args.chunk_size, "--chunk-size")
    positive_float(args.speed, "--speed", "times real time")
    if args.duration is not None:
        positive_float(args.duration, "--duration", "seconds")
    non_negative_float(args.wait_consumers, "--wait-consumers", "seconds")
    recording = open_recording(path, stream=args.stream)
    name = args.name or path.stem
    player = Player(
        recording,
        name=name,
        source_id=args.source_id or default_source_id(path),
        chunk_size=args.chunk_size,
        speed=args.speed,
        loop=args.loop,
        duration=args.duration,
        index_channel=args.index_channel,
        wait_consumers=args.wait_consumers,
    )
    err = sys.stderr
    if not args.quiet:
        print(
            f"playing {path.name}: {recording.n_channels} ch, {recording.sfreq:g} Hz, "
            f"{recording.duration_s:.1f} s, {len(recording.events)} events -> LSL '{player.name}' "
            f"(source_id {player.source_id}), markers on '{player.name}-markers'",
            file=err,
        )
        for note in recording.notes:
            print(f"  note: {note}", file=err)
        if args.duration is not None and not args.loop and args.duration > recording.duration_s:
            print(
                f"  note: --duration {args.duration:g} s is longer than the recording; playing it "
                "once (add --loop to repeat it)",
                file=err,
            )
        if player.events_skipped:
            print(
                f"  note: {player.events_skipped} event(s) lie outside the samples; not sent",
                file=err,
            )
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C stops playing even when started from a shell that ignores SIGINT for background jobs
    # (Python then leaves SIGINT ignored)
    previous_int = signal.signal(signal.SIGINT, _on_sigterm)
    interrupted = False
    try:
        player.start()
        progress = _Progress(player, err, enabled=not args.quiet)
        while not player.join(timeout=0.25):
            progress.update()
        progress.update(final=True)
    except (KeyboardInterrupt, _Terminated):
        interrupted = True
    finally:
        player.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        recording.close()
    if player.error is not None:
        exc = player.error
        if isinstance(exc, ClosedLoopError):
            raise exc
        raise StreamError(f"playing {path.name} failed after {player.n_pushed} samples: {exc}.")
    if not args.quiet:
        how = "stopped" if interrupted else "done"
        print(
            f"{how}: {player.n_pushed} samples ({player.position_s:.1f} s), "
            f"{player.n_markers} markers, max lag {player.max_lag_s * 1e3:.2f} ms",
            file=err,
        )
    return 0


class _Progress:
    """One status line on stderr: redrawn in place on a terminal, every 10 s otherwise."""

    def __init__(self, player: Player, stream, enabled: bool) -> None:
        self.player, self.stream, self.enabled = player, stream, enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = 0.5 if self.tty else 10.0
        self.last_time = time.monotonic()
        self.last_pushed = 0
        self.last_shown = self.last_time

    def update(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last_shown < self.interval:
            return
        p = self.player
        rate = (p.n_pushed - self.last_pushed) / max(1e-9, now - self.last_time)
        self.last_time, self.last_pushed, self.last_shown = now, p.n_pushed, now
        total = p.n_total / p.sfreq if p.n_total is not None else math.inf
        where = f"{p.position_s:8.1f} s" + (f" / {total:.1f} s" if math.isfinite(total) else "")
        line = (
            f"{where}  {rate:7.0f} samples/s  x{p.speed:g}  lag {p.lag_s * 1e3:6.2f} ms "
            f"(max {p.max_lag_s * 1e3:.2f})  markers {p.n_markers}"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        elif not final:
            self.stream.write(line + "\n")
        self.stream.flush()
