"""The command line's sub-commands, one thin module each, named after its command.

A command module holds only what the command line needs: ``configure_parser(parser)`` (options,
cheap imports) and ``run_command(args) -> int`` (calls the library, prints, returns the exit
code). Everything else lives in library modules, which never import argparse and never print;
they log through the ``closedloop`` logger. ``closedloop/cli.py`` maps command names to these
modules; ``closedloop bench X`` maps to ``commands/bench_X.py``.
"""
