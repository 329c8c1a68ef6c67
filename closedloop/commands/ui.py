"""``closedloop ui``: the browser views of a running session (operator and participant)."""

from __future__ import annotations

import argparse
import sys

from closedloop.errors import UsageError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8765, help="port to serve on (default 8765; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (default 127.0.0.1: this machine only); another address lets "
                        "other hosts reach the pages")
    s = p.add_argument_group("session (default: the one closedloop run visible now)")
    s.add_argument("--status-source-id", help="the run's status stream (closedloop-status) source_id")
    s.add_argument("--state-source-id", help="a State stream's source_id (for an engine without a status stream)")
    s.add_argument("--marker-source-id", help="the Markers stream's source_id (default: from the status stream)")
    s.add_argument("--input-source-id", help="the input EEG stream's source_id (default: from the status stream)")
    s.add_argument("--protocol", "-p", help="protocol file or preset, when the session publishes no status stream")
    s.add_argument("--resolve-timeout", type=float, default=10.0, help="seconds to wait for the streams (default 10)")
    p.add_argument("--control", metavar="PATH",
                   help="control the run through its --control PATH socket (pause, resume, stop); without it the "
                        "pages are view-only")
    p.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)  # run --ui: its end of a socket pair
    p.add_argument("--duration", type=float, help="serve this many seconds, then end")


def run_command(args: argparse.Namespace) -> int:
    from closedloop import realtime

    # never under real-time scheduling, even as the child of a run --ui --realtime: the views must
    # not compete with the loop (their threads, liblsl's and the server's, inherit this)
    realtime.normal()
    from closedloop.ui.app import find_session, serve
    from closedloop.ui.control import ControlClient
    from closedloop.ui.server import new_token

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 to 65535, got {args.port}.")
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}.")
    if args.control and args.control_fd is not None:
        raise UsageError("give --control PATH or --control-fd, not both.")
    protocol = None
    if args.protocol:
        from closedloop.protocol import load_protocol

        protocol = load_protocol(args.protocol)
    control, owner, note = None, None, ""
    if args.control_fd is not None:
        control = owner = ControlClient.from_fd(args.control_fd)
    elif args.control:
        control = ControlClient.connect(args.control)
    else:
        note = ("start the run with --control PATH and this ui with --control PATH to pause, resume and stop "
                "it from the page (or start the run with --ui)")
    streams = find_session(status_source_id=args.status_source_id, state_source_id=args.state_source_id,
                           marker_source_id=args.marker_source_id, input_source_id=args.input_source_id,
                           timeout=args.resolve_timeout)
    for text in streams.notes:
        print(f"closedloop ui: note: {text}.", file=sys.stderr)
    token = new_token()

    def ready(urls: dict, port: int) -> None:
        print(f"closedloop ui: operator page    {urls['operator']}", file=sys.stderr)
        print(f"closedloop ui: participant page {urls['participant']}", file=sys.stderr)
        if control is not None:
            print(f"closedloop ui: control token {token} (pause, resume and stop need it)", file=sys.stderr)
        else:
            print(f"closedloop ui: view only ({note}).", file=sys.stderr)
        sys.stderr.flush()

    try:
        serve(streams, host=args.host, port=args.port, token=token, protocol=protocol, control=control,
              control_note=note, owner=owner, duration_s=args.duration, on_ready=ready)
    except OSError as exc:
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}.") from exc
    finally:
        if control is not None:
            control.close()
    return 0
