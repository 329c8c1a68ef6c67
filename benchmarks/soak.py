"""Soak test of the live loop (issue 9 item 4): 64 ch at 5 kHz for 30 minutes by default;
resident memory over time, drops, latency percentiles per minute.

    python benchmarks/soak.py                          # 30 minutes
    python benchmarks/soak.py --duration 600 --json soak.json

The same as `closedloop bench soak`; every option of that command is accepted.
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
    sys.exit(main(["bench", "soak", *sys.argv[1:]]))
