"""``closedloop calibrate`` on a real eyes-closed baseline: band, estimator, a protocol that loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.io import open_recording
from closedloop.offline import replay
from closedloop.protocol import load_protocol
from tests.helpers.protocols import phase_toml
from tests.helpers.recordings import EYES_CLOSED

PROTOCOL = phase_toml(
    "alpha-o1-test", "O1", reference="none", method="ar", target_phase_deg=180.0, baseline_s=20.0
)


@pytest.fixture
def protocol_file(tmp_path: Path) -> Path:
    path = tmp_path / "start.toml"
    path.write_text(PROTOCOL)
    return path


def calibrate(protocol: Path | str, out: Path, *options: str) -> int:
    """``closedloop calibrate`` of the eyes-closed recording under ``protocol``, into ``out``."""
    return main(
        ["calibrate", str(EYES_CLOSED), "--protocol", str(protocol), "--out", str(out), *options]
    )


def test_calibrate_writes_a_tuned_protocol_that_replays(
    recordings, protocol_file, tmp_path, capsys
):
    out = tmp_path / "tuned.toml"
    rc = calibrate(protocol_file, out, "--methods", "wiener,echt,ar")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "individual peak" in printed and "wiener" in printed and "echt" in printed
    tuned = load_protocol(str(out))
    # S001R02 O1: alpha peak at 10.0 Hz (recordings README); band = peak +- 2 Hz
    centre = (tuned.band.low_hz + tuned.band.high_hz) / 2
    assert 9.5 < centre < 10.5 and tuned.band.high_hz - tuned.band.low_hz == pytest.approx(4.0)
    assert tuned.band.individual is False
    # on strong alpha our predictor wins the held-out comparison
    assert tuned.estimator.method == "wiener"
    assert set(tuned.estimator.params) <= {"window_s"}
    assert tuned.trigger.target_phase_deg == 180.0 and tuned.signal.channel == "O1"
    # named after the baseline it was tuned on, not the protocol it started from
    assert tuned.name == "alpha-o1-test-S001R02_first60s"
    # the written protocol runs in the engine
    with open_recording(EYES_CLOSED) as rec:
        data, sfreq, names = rec.read(0, rec.n_samples), rec.sfreq, list(rec.ch_names)
    result = replay(data, tuned, sfreq=sfreq, ch_names=names, units="uV", chunk_size=4, keep_state=False)
    assert result.summary["estimator"] == "wiener"
    assert len(result.triggers) > 20
    assert np.all(result.onsets_s >= 20.0)


def test_calibrate_names_the_output_after_the_person(recordings, protocol_file, tmp_path):
    from closedloop.calibration import person_of

    assert person_of("/data/sub-07/ses-02/eeg/sub-07_ses-02_task-rest_eeg.edf") == "sub-07_ses-02"
    assert person_of("sub-P001_task-rest_eeg.vhdr") == "sub-P001"
    assert person_of("S001R02_first60s.edf") == "S001R02_first60s"
    out = tmp_path / "tuned.toml"
    assert calibrate("mu-trough-c3", out, "--methods", "ar", "--name", "mu for Ada") == 0
    assert load_protocol(str(out)).name == "mu for Ada"


def test_calibrate_errors_name_the_problem(recordings, protocol_file, tmp_path, capsys):
    assert calibrate(protocol_file, tmp_path / "x.txt") == 2
    assert "must be a .toml file" in capsys.readouterr().err
    assert calibrate(protocol_file, tmp_path / "x.toml", "--methods", "kalman") == 2
    assert (
        "'kalman' is not a calibratable estimator; accepted: ar, echt, etp, wiener"
        in capsys.readouterr().err
    )
    assert calibrate(protocol_file, tmp_path / "x.toml", "--seconds", "10") == 3
    assert "too short to calibrate" in capsys.readouterr().err
    assert calibrate("faa-neurofeedback", tmp_path / "x.toml") == 2
    assert "calibrate tunes phase protocols" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()
