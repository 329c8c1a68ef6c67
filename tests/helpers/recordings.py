"""Where the shared real recordings are, and a guard that fails loudly when they are not."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = (PROJECT_ROOT / ".." / "shared" / "recordings").resolve()

EYES_CLOSED = RECORDINGS / "eegmmidb" / "S001R02_first60s.edf"
EYES_OPEN = RECORDINGS / "eegmmidb" / "S001R01.edf"
MOTOR = RECORDINGS / "eegmmidb" / "S001R03.edf"
EEGMAT = RECORDINGS / "eegmat" / "Subject04_2.edf"
BDF_SLEEP = RECORDINGS / "mne-testing-data" / "multiple_annotation_chans.bdf"
ANT_1KHZ = RECORDINGS / "mne-testing-data" / "antio_CA_208" / "test_CA_208_amp_disconnection.vhdr"
NEURONE_5KHZ = RECORDINGS / "mne-testing-data" / "Brainvision" / "test_NO.vhdr"
XDF_MARKERS = RECORDINGS / "xdf" / "sub-thai_ses-S003_task-Default_run-001_eeg.xdf"
XDF_UNICORN = RECORDINGS / "xdf" / "unicorn_sub-P001_ses-S001_task-Default_run-001_eeg.xdf"


def require_recordings() -> Path:
    """Return the recordings folder, failing the test (never skipping) if it is absent."""
    if not (RECORDINGS / "README.md").is_file():
        pytest.fail(f"the shared recordings are missing: expected them at {RECORDINGS}")
    return RECORDINGS
