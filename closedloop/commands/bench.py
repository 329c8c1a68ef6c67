"""``closedloop bench``: latency, accuracy, throughput, soak and loopback benchmarks.

Each sub-command lives in its own module with ``configure_parser(p)`` and ``run_command(args)``.
Nothing heavy is imported here, so that ``python -m closedloop.bench.latency`` (the mne-lsl worker)
and the CLI stay quick to start and pylsl loads only after the loopback configuration is set.
"""

from __future__ import annotations

import argparse
import importlib

from closedloop.errors import UsageError

# name -> (module, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "latency": ("closedloop.commands.bench_latency", "push-to-receipt latency of the live loop, trigger precision, CPU"),
    "accuracy": ("closedloop.commands.bench_accuracy", "phase accuracy of the estimators against the offline truth"),
    "throughput": ("closedloop.commands.bench_throughput", "largest channel count the live loop sustains; replay speed"),
    "soak": ("closedloop.commands.bench_soak", "a long live session: memory, drops and latency over time"),
    "loopback": ("closedloop.commands.bench_loopback",
                 "timing qualification: TTL pulses looped back into the amplifier, each found and timed"),
    "virtual-amp": ("closedloop.commands.bench_virtual_amp",
                    "a virtual looped-back amplifier (trigger input on a pseudo-terminal) for bench loopback"),
}


def _unavailable(name: str, module: str, reason: str):
    def run_command(args: argparse.Namespace) -> int:
        raise UsageError(f"'closedloop bench {name}' is not available in this build ({module}: {reason}).")

    return run_command


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, (module_name, help_text) in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
            configure, run = module.configure_parser, module.run_command
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            configure, run = None, _unavailable(name, module_name, "the module does not exist yet")
        except AttributeError as exc:
            configure, run = None, _unavailable(name, module_name, str(exc))
        q = sub.add_parser(name, help=help_text, description=help_text)
        if configure is not None:
            configure(q)
        q.set_defaults(_bench_run=run)


def run_command(args: argparse.Namespace) -> int:
    run = getattr(args, "_bench_run", None)
    if run is None:
        names = ", ".join(BENCHMARKS)
        raise UsageError(f"name a benchmark: one of {names} (closedloop bench BENCHMARK --help).")
    return int(run(args) or 0)
