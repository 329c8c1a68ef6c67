"""Loop latency of the live engine (issue 5 targets; issue 8 item 1).

    python benchmarks/latency.py                       # 64 ch, 5 kHz, chunks of 5, 30 s
    python benchmarks/latency.py --compare mne-lsl     # and the mne-lsl StreamLSL pipeline
    python benchmarks/latency.py --monitor --json lat-monitor.json

The same as `closedloop bench latency`; every option of that command is accepted.
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
    sys.exit(main(["bench", "latency", *sys.argv[1:]]))
