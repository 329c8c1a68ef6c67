"""``closedloop protocols [NAME]``: list the presets, print one as TOML, or check a file."""

from __future__ import annotations

import argparse
import sys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``closedloop protocols``."""
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="a preset to print as commented TOML (save it to start your own protocol), or a "
        ".toml file to validate and print in full with every default filled in; "
        "without NAME, list the presets",
    )


def run_command(args: argparse.Namespace) -> int:
    """List presets, or print one; a file is validated and printed complete."""
    from pathlib import Path

    from closedloop.protocol import (
        _looks_like_path,
        list_presets,
        load_protocol,
        preset_text,
        protocol_to_toml,
    )

    name = args.name
    if name is None:
        presets = list_presets()
        width = max(len(n) for n, _ in presets)
        for preset, summary in presets:
            print(f"{preset:<{width}}  {summary}")
        return 0
    if Path(name).is_file() or _looks_like_path(name):
        sys.stdout.write(protocol_to_toml(load_protocol(name)))
        return 0
    sys.stdout.write(preset_text(name))
    return 0
