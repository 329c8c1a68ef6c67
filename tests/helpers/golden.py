"""Reference replay outputs: every preset on every shared recording it can run on.

The engine may be reorganised or made faster, but a replay must not change: the same recording,
protocol and chunking give byte-identical ``events.tsv`` (../shared/CONTRACTS.md, "Offline
outputs"). ``tests/data/replay_golden/`` holds the ``events.tsv`` of each case as the engine wrote
it when the reference was taken; ``tests/offline/test_replay_golden.py`` replays each case through the
command line and compares bytes.

Regenerate (only when a change of behaviour is intended, and say so in the commit):
``python -m tests.helpers.golden``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.helpers.recordings import PROJECT_ROOT, RECORDINGS

GOLDEN_DIR = PROJECT_ROOT / "tests" / "data" / "replay_golden"

#: recording label -> path (shared recordings, and the simulated one that ships)
GOLDEN_RECORDINGS = {
    "S001R01": RECORDINGS / "eegmmidb" / "S001R01.edf",
    "S001R02": RECORDINGS / "eegmmidb" / "S001R02_first60s.edf",
    "S001R03": RECORDINGS / "eegmmidb" / "S001R03.edf",
    "S001R04": RECORDINGS / "eegmmidb" / "S001R04.edf",
    "S088R10": RECORDINGS / "eegmmidb" / "S088R10.edf",
    "eegmat04": RECORDINGS / "eegmat" / "Subject04_2.edf",
    "bdf": RECORDINGS / "mne-testing-data" / "multiple_annotation_chans.bdf",
    "simulated": PROJECT_ROOT / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf",
}

PRESETS = (
    "alpha-peak-o2",
    "alpha-trough-f5-dlpfc",
    "alpha-trough-o2",
    "default",
    "faa-neurofeedback",
    "mu-trough-c3",
    "random-phase-sham",
    "so-upstate-clas",
)

#: extra chunkings beyond the default (~10 ms): per-sample decisions and a coarse 40 ms
EXTRA_CHUNKS = {"S001R02": (1, 6), "eegmat04": (1, 20)}


def cases() -> list[tuple[str, str, int | None]]:
    """``(recording label, preset, chunk_size or None for the default)`` of every case."""
    out = [(rec, preset, None) for rec in GOLDEN_RECORDINGS for preset in PRESETS]
    for rec, sizes in EXTRA_CHUNKS.items():
        for size in sizes:
            out += [(rec, preset, size) for preset in ("default", "mu-trough-c3", "random-phase-sham")]
    return out


def case_name(rec: str, preset: str, chunk: int | None) -> str:
    return f"{rec}__{preset}__{'default' if chunk is None else f'chunk{chunk}'}"


def state_digest(out: Path) -> str:
    """SHA-256 over the State rows replay kept (time, phase, amplitude, feedback, gate), so that
    feedback protocols, which deliver no trigger, are covered as well."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    with np.load(out / "state.npz") as state:
        for key in ("time_s", "phase_deg", "amplitude", "feedback", "gate"):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(state[key], dtype="<f8").tobytes())
    return digest.hexdigest()


def replay_case(rec: str, preset: str, chunk: int | None, out: Path) -> tuple[int, bytes | None, str]:
    """Replay one case through the command line; ``(exit code, events.tsv bytes, stderr)``."""
    import contextlib
    import io

    from closedloop.cli import main

    args = ["replay", str(GOLDEN_RECORDINGS[rec]), "--protocol", preset, "--out", str(out), "--quiet"]
    if chunk is not None:
        args += ["--chunk-size", str(chunk)]
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        code = main(args)
    events = out / "events.tsv"
    return code, (events.read_bytes() if code == 0 and events.exists() else None), err.getvalue()


def regenerate() -> None:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for old in GOLDEN_DIR.glob("*"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for rec, preset, chunk in cases():
            name = case_name(rec, preset, chunk)
            code, events, err = replay_case(rec, preset, chunk, Path(tmp) / name)
            if code == 0:
                (GOLDEN_DIR / f"{name}.tsv").write_bytes(events)
                (GOLDEN_DIR / f"{name}.state").write_text(state_digest(Path(tmp) / name) + "\n")
                n_rows = events.count(b"\n") - 1
                print(f"{name}: {n_rows} triggers")
            else:
                # a case the preset cannot run on (a missing channel, a rate too low): the
                # refusal itself is the reference
                (GOLDEN_DIR / f"{name}.exit").write_text(f"{code}\n")
                print(f"{name}: exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}")


if __name__ == "__main__":
    sys.exit(regenerate())
