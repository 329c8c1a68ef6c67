"""The ``closedloop`` command line: one entry point, one module per sub-command.

The command modules live in ``closedloop/commands/``; each defines ``configure_parser(parser)`` (options only, cheap imports) and
``run_command(args) -> int``. Errors derived from :class:`closedloop.errors.ClosedLoopError`
are printed as one plain sentence with their exit code (../shared/CONTRACTS.md); anything
else is reported as an internal error with exit 1 (set ``CLOSEDLOOP_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from closedloop import __version__
from closedloop.errors import ClosedLoopError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("closedloop.commands.demo", "play the shipped recording over LSL and run the loop live against it"),
    "streams": ("closedloop.commands.streams", "list the LSL streams visible now"),
    "play": ("closedloop.commands.play", "stream a recording as a live LSL amplifier"),
    "run": ("closedloop.commands.run", "the live closed loop on an LSL stream"),
    "replay": ("closedloop.commands.replay", "run the engine offline on a recording, deterministic"),
    "protocols": ("closedloop.commands.protocols", "list preset protocols, or print one as TOML"),
    "calibrate": ("closedloop.commands.calibrate", "tune a protocol to one person's baseline recording"),
    "report": ("closedloop.commands.report", "HTML report with figures from a recorded or replayed session"),
    "simulate": ("closedloop.commands.simulate", "write a simulated EEG recording"),
    "bench": ("closedloop.commands.bench", "benchmarks: latency, accuracy, throughput, soak, loopback"),
    "ui": ("closedloop.commands.ui", "the browser views of a running session (operator and participant)"),
    "sound": ("closedloop.commands.sound", "list sound output devices with their latency, or play test bursts on one"),
    "sweep": ("closedloop.commands.sweep", "replay many recordings under a grid of protocol settings, scored"),
}


def _not_available(name: str, reason: str):
    def run_command(args: argparse.Namespace) -> int:
        print(f"closedloop {name}: not available in this build ({reason}).", file=sys.stderr)
        return 2

    return run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="closedloop",
        description="Real-time closed-loop EEG over Lab Streaming Layer: phase-locked triggers, "
        "neurofeedback, replay and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"closedloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
            configure, run = module.configure_parser, module.run_command
        except (ImportError, AttributeError) as exc:
            configure, run = None, _not_available(name, str(exc))
        p = sub.add_parser(name, help=help_text, description=help_text)
        if configure is not None:
            configure(p)
        p.set_defaults(_run=run, _name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    from closedloop.log import command_handler

    logger = logging.getLogger("closedloop")
    level = logger.level
    handler = command_handler(args._name)  # the library's records, as "closedloop COMMAND: ..." on stderr
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except ClosedLoopError as exc:
        print(f"closedloop {args._name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"closedloop {args._name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # last line of defence: a sentence, not a bare traceback
        if os.environ.get("CLOSEDLOOP_DEBUG"):
            traceback.print_exc()
        print(
            f"closedloop {args._name}: internal error: {type(exc).__name__}: {exc} "
            "(set CLOSEDLOOP_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
