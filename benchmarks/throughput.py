"""Largest channel count the live loop sustains at 5 and 1 kHz, and replay speed (issue 8 item 3).

    python benchmarks/throughput.py --json throughput.json

The same as `closedloop bench throughput`; every option of that command is accepted.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from closedloop.cli import main
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from closedloop.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "throughput", *sys.argv[1:]]))
