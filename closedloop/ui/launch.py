"""What ``closedloop run`` does for its status stream, ``--ui`` and ``--control PATH``.

:func:`start_views` starts the run's status publisher (:mod:`closedloop.status`, always: any
``closedloop ui`` can then attach to the session), opens the control socket of ``--control
PATH`` when asked, and with ``--ui`` starts ``closedloop ui`` as a child process, handing it one
end of a socket pair for control and the source_ids of the session's streams. The child prints
the pages' addresses and the control token; it ends by itself when the run closes its end of the
pair (at the end of the run, or if the run dies), and :meth:`Views.close` waits for it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

#: The UI's default port (``--ui-port``); 0 picks a free one.
DEFAULT_PORT = 8765
#: How long the UI process may take to end after its run closed the control pair.
UI_EXIT_TIMEOUT_S = 5.0


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``run``'s options for the status stream, the browser views and the control socket."""
    g = p.add_argument_group("browser views (closedloop ui)")
    g.add_argument("--ui", action="store_true",
                   help="serve the operator's and the participant's pages beside the loop, from a process of "
                        "their own (it prints their addresses and the control token)")
    g.add_argument("--ui-port", type=int, default=DEFAULT_PORT,
                   help=f"port of the pages (default {DEFAULT_PORT}; 0 = any free port)")
    g.add_argument("--ui-host", default="127.0.0.1", metavar="ADDRESS",
                   help="address the pages listen on (default 127.0.0.1: this machine only)")
    g.add_argument("--control", metavar="PATH",
                   help="open a Unix-domain control socket at PATH (mode 0600), so that a standalone "
                        "'closedloop ui --control PATH' may pause, resume and stop this run")
    g.add_argument("--status-name", help="status stream name (default closedloop-status)")
    g.add_argument("--status-source-id", help="status stream source_id (default: the State stream's "
                                              "source_id with '-status', or stable for the protocol and host)")


class Views:
    """The running status publisher, control server and UI process of one run."""

    def __init__(self, status, control, process: subprocess.Popen | None) -> None:
        self.status = status
        self.control = control
        self.process = process

    def close(self) -> None:
        """Publish the last status, close the control path and wait for the UI process to end."""
        self.status.stop()
        self.control.close()
        proc = self.process
        if proc is not None:
            try:
                proc.wait(timeout=UI_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=UI_EXIT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.status.close()


def status_source_id(args: argparse.Namespace) -> str | None:
    if getattr(args, "status_source_id", None):
        return args.status_source_id
    if getattr(args, "state_source_id", None):
        return f"{args.state_source_id}-status"
    return None


def start_views(session, args: argparse.Namespace) -> Views:
    """Start the status stream, and the control socket and UI process when ``args`` ask for them."""
    from closedloop.errors import UsageError
    from closedloop.status import StatusPublisher
    from closedloop.ui.control import ControlServer

    if args.ui and not 0 <= args.ui_port <= 65535:
        raise UsageError(f"--ui-port must be 0 to 65535, got {args.ui_port}.")
    status = StatusPublisher(session, name=getattr(args, "status_name", None),
                             source_id=status_source_id(args), record=getattr(args, "record", None))
    control = ControlServer(session)
    process = None
    try:
        if args.control:
            status.control = str(control.listen(args.control))
        if args.ui:
            ours, theirs = socket.socketpair()
            cmd = [
                sys.executable, "-m", "closedloop", "ui",
                "--status-source-id", status.source_id,
                "--state-source-id", status.input_ids["state_source_id"],
                "--marker-source-id", status.input_ids["marker_source_id"],
                "--port", str(args.ui_port), "--host", args.ui_host,
                "--control-fd", str(theirs.fileno()),
            ]
            process = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                       env=dict(os.environ))
            theirs.close()
            control.serve(ours)
            status.control = status.control or "ui"
        status.start()
    except BaseException:
        control.close()
        if process is not None:
            process.terminate()
        status.close()
        raise
    return Views(status, control, process)
