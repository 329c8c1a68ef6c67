"""``closedloop simulate`` and the shipped simulated recording."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest
from scipy.signal import butter, hilbert, sosfiltfilt, welch

from closedloop.cli import main
from closedloop.errors import UsageError
from closedloop.simulate import (
    MONTAGE_64,
    electrode_positions,
    simulate_eeg,
    write_recording,
)
from tests.helpers.recordings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf"
SHIPPED_README = PROJECT_ROOT / "recordings" / "README.md"


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _alpha_ratio(data: np.ndarray, sfreq: float) -> np.ndarray:
    freqs, psd = welch(data, sfreq, nperseg=int(2 * sfreq))
    alpha = psd[:, (freqs >= 8) & (freqs <= 13)].sum(axis=1)
    broad = psd[:, (freqs >= 2) & (freqs <= 40)].sum(axis=1)
    return alpha / broad


def _template_positions() -> dict[str, np.ndarray]:
    """MNE's template 10-20 positions (the montage was renamed in MNE 1.13)."""
    name = (
        "colin27_1020" if "colin27_1020" in mne.channels.get_builtin_montages() else "standard_1020"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        montage = mne.channels.make_standard_montage(name)
    return montage.get_positions()["ch_pos"]


@pytest.fixture(scope="module")
def sim60() -> tuple[np.ndarray, list[str], float, list]:
    return simulate_eeg(60.0, 500.0, 7, n_channels=32)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_edf(tmp_path: Path) -> None:
    options = ["--seconds", "6", "--sfreq", "250"]
    assert main(["simulate", str(tmp_path / "a.edf"), *options, "--seed", "3"]) == 0
    assert main(["simulate", str(tmp_path / "b.edf"), *options, "--seed", "3"]) == 0
    assert main(["simulate", str(tmp_path / "c.edf"), *options, "--seed", "4"]) == 0
    a, b, c = ((tmp_path / f"{x}.edf").read_bytes() for x in "abc")
    assert a == b
    assert a != c


def test_same_seed_same_bytes_brainvision(tmp_path: Path) -> None:
    for name in ("a", "b"):
        out = tmp_path / name / "sim.vhdr"
        out.parent.mkdir()
        assert (
            main(["simulate", str(out), "--seconds", "4.5", "--sfreq", "512", "--seed", "9"]) == 0
        )
    files = ("sim.vhdr", "sim.vmrk", "sim.eeg")
    assert _sha256(*(tmp_path / "a" / f for f in files)) == _sha256(
        *(tmp_path / "b" / f for f in files)
    )


def test_channel_does_not_depend_on_montage_size() -> None:
    big, big_names, _, big_events = simulate_eeg(5.0, 250.0, 11, n_channels=64)
    small, small_names, _, small_events = simulate_eeg(5.0, 250.0, 11, n_channels=8)
    assert {"O1", "O2", "Oz", "C3", "C4", "Cz", "Pz", "Fz"} == set(small_names)
    rows = [big_names.index(name) for name in small_names]
    np.testing.assert_array_equal(small, big[rows])
    assert small_events == big_events


# --------------------------------------------------------------------------- MNE reads it back


def test_mne_reads_edf_back(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sim.edf"
    assert main(["simulate", str(out), "--seconds", "8", "--sfreq", "500", "--seed", "5"]) == 0
    assert "simulated" in capsys.readouterr().out
    data, names, _sfreq, events = simulate_eeg(8.0, 500.0, 5)
    raw = mne.io.read_raw(out, preload=True, verbose="error")
    assert raw.ch_names == names
    assert len(names) == 32
    assert set(names) <= set(_template_positions())
    assert set(names) == set(mne.channels.make_standard_montage("biosemi32").ch_names)
    assert raw.info["sfreq"] == 500.0
    assert raw.n_times == 4000
    assert raw.info["meas_date"].year == 1985
    # 16-bit storage: within half a 0.1 µV step of the simulated signal.
    np.testing.assert_allclose(raw.get_data() * 1e6, data, atol=0.05 + 1e-9, rtol=0)
    assert list(raw.annotations.description) == [e.description for e in events]
    np.testing.assert_allclose(raw.annotations.onset, [e.onset_s for e in events], atol=1e-6)
    np.testing.assert_allclose(raw.annotations.duration, [e.duration_s for e in events], atol=1e-6)
    assert "blink" in raw.annotations.description


def test_mne_reads_brainvision_back(tmp_path: Path) -> None:
    out = tmp_path / "sim.vhdr"
    data, names, sfreq, events = simulate_eeg(3.3, 1000.0, 2, n_channels=16)
    written = write_recording(out, data, names, sfreq, events)
    assert sorted(p.suffix for p in written) == [".eeg", ".vhdr", ".vmrk"]
    raw = mne.io.read_raw_brainvision(out, preload=True, verbose="error")
    assert raw.ch_names == names
    assert raw.info["sfreq"] == pytest.approx(1000.0)
    assert raw.n_times == 3300
    np.testing.assert_allclose(raw.get_data() * 1e6, data, atol=0.05 + 1e-9, rtol=0)
    assert list(raw.annotations.description) == [f"Comment/{e.description}" for e in events]
    np.testing.assert_allclose(raw.annotations.onset, [e.onset_s for e in events], atol=1e-3)


# --------------------------------------------------------------------------- content


def test_geometry_close_to_mne_template() -> None:
    template = _template_positions()
    ours = electrode_positions()
    names = list(MONTAGE_64)
    points = np.array([template[name] for name in names])
    # Least-squares sphere through the template: |p|^2 = 2 p.c + (r^2 - |c|^2)
    lhs = np.column_stack([2 * points, np.ones(len(points))])
    centre = np.linalg.lstsq(lhs, (points**2).sum(axis=1), rcond=None)[0][:3]
    directions = points - centre
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    mine = np.array([ours[name] for name in names])
    angle = np.degrees(np.arccos(np.clip((directions * mine).sum(axis=1), -1, 1)))
    assert angle.mean() < 7.0
    assert angle.max() < 12.0
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0)


def test_shape_units_and_amplitude(sim60) -> None:
    data, names, _sfreq, _events = sim60
    assert data.shape == (32, 30000)
    assert data.dtype == np.float64 and data.flags.c_contiguous
    assert names[:2] == ["Fp1", "Fp2"] and names[-3:] == ["O1", "Oz", "O2"]
    rms = data.std(axis=1)
    # Background of tens of µV, never a flat or exploding channel.
    assert np.all((rms > 10.0) & (rms < 40.0)), rms


def test_alpha_peak_occipital_over_frontal(sim60) -> None:
    data, names, sfreq, _ = sim60
    ratio = _alpha_ratio(data, sfreq)
    freqs, psd = welch(data, sfreq, nperseg=int(4 * sfreq))
    for ch in ("O1", "O2"):
        i = names.index(ch)
        assert 0.4 <= ratio[i] <= 0.75, (ch, ratio[i])
        search = (freqs >= 4) & (freqs <= 30)
        peak = freqs[search][np.argmax(psd[i, search])]
        assert 8.0 <= peak <= 12.0, (ch, peak)
    occipital = ratio[[names.index(c) for c in ("O1", "O2", "Oz")]]
    frontal = ratio[[names.index(c) for c in ("Fp1", "Fp2", "Fz", "F3", "F4")]]
    assert occipital.min() > 2.5 * frontal.max()
    central = ratio[[names.index(c) for c in ("C3", "C4")]]
    assert central.min() > 1.5 * frontal.max()


def test_line_noise_peak_at_50_hz(sim60) -> None:
    data, _names, sfreq, _ = sim60
    freqs, psd = welch(data, sfreq, nperseg=int(2 * sfreq))
    at = lambda hz: psd[:, np.argmin(np.abs(freqs - hz))]
    assert np.all(at(50.0) > 4.0 * np.maximum(at(45.0), at(55.0)))
    window = (freqs >= 42) & (freqs <= 58)
    assert np.all(freqs[window][np.argmax(psd[:, window], axis=1)] == 50.0)


def test_alpha_bursts_wax_and_wane_with_drifting_frequency(sim60) -> None:
    data, names, sfreq, events = sim60
    bursts = [e for e in events if e.description == "alpha"]
    assert len(bursts) >= 10
    assert all(0.5 <= e.duration_s <= 3.0 for e in bursts)
    sos = butter(4, [8.0, 13.0], "bandpass", fs=sfreq, output="sos")
    analytic = hilbert(sosfiltfilt(sos, data[names.index("O2")]))
    envelope = np.abs(analytic)
    inside = np.zeros(data.shape[1], dtype=bool)
    for e in bursts:
        inside[int(e.onset_s * sfreq) : int((e.onset_s + e.duration_s) * sfreq)] = True
    assert envelope[inside].mean() > 2.0 * envelope[~inside].mean()
    inst_hz = np.diff(np.unwrap(np.angle(analytic))) * sfreq / (2 * np.pi)
    window = int(5 * sfreq)
    medians = np.array(
        [np.median(inst_hz[k : k + window]) for k in range(0, inst_hz.size - window, window)]
    )
    assert np.all((medians > 8.0) & (medians < 12.0)), medians
    assert np.ptp(medians) > 0.4, medians


def test_blinks_frontal(sim60) -> None:
    data, names, sfreq, events = sim60
    blinks = [e for e in events if e.description == "blink"]
    assert 3 <= len(blinks) <= 9
    assert all(0.2 <= e.duration_s <= 0.4 for e in blinks)

    def deflection(ch: str) -> np.ndarray:
        row = data[names.index(ch)]
        out = []
        for e in blinks:
            start, stop = int(e.onset_s * sfreq), int((e.onset_s + e.duration_s) * sfreq)
            before = row[max(0, start - int(0.2 * sfreq)) : start].mean()
            out.append(row[start:stop].max() - before)
        return np.array(out)

    fp = np.maximum(deflection("Fp1"), deflection("Fp2"))
    assert np.all((fp > 70.0) & (fp < 260.0)), fp
    assert np.median(deflection("Fz")) < 0.6 * np.median(fp)
    assert np.median(np.abs(deflection("Oz"))) < 0.25 * np.median(fp)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--seconds", "-5"], r"seconds must be between 1 and 3600; got -5"),
        (["--seconds", "nan"], r"seconds must be between"),
        (["--sfreq", "100"], r"sfreq must be between 200 and 20000 Hz .*50 Hz line noise.*got 100"),
        (["--seed", "-1"], r"seed must be a whole number >= 0; got -1"),
        (
            ["--channels", "65"],
            r"channel count \(n_channels, --channels\) must be a whole number from 1 to 64; got 65",
        ),
        (["--seconds", "2.5"], r"EDF stores whole seconds.*BrainVision \(\.vhdr\)"),
        (["--sfreq", "512.5"], r"EDF stores whole seconds at a whole number of Hz"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, extra, needle) -> None:
    out = tmp_path / "x.edf"
    assert main(["simulate", str(out), "--seconds", "4", *extra]) == 2
    err = capsys.readouterr().err
    assert re.search(needle, err), err
    assert "Traceback" not in err
    assert not out.exists()


def test_bad_output_paths_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["simulate", str(tmp_path / "x.fif"), "--seconds", "2"]) == 2
    assert re.search(
        r"extension must be \.edf \(EDF\+\), \.vhdr \(BrainVision\)", capsys.readouterr().err
    )
    missing = tmp_path / "no" / "such" / "x.edf"
    assert main(["simulate", str(missing), "--seconds", "2"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_entry_point_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "x.edf"
    result = subprocess.run(
        [sys.executable, "-m", "closedloop", "simulate", str(out), "--seconds", "-1"],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "seconds must be between 1 and 3600; got -1" in result.stderr
    assert not out.exists()


def test_api_rejects_bad_values() -> None:
    with pytest.raises(UsageError, match=r"sfreq must be between 200"):
        simulate_eeg(2.0, 150.0, 1)
    with pytest.raises(UsageError, match=r"seconds must be between 1"):
        simulate_eeg(0.0, 500.0, 1)
    with pytest.raises(UsageError, match=r"too much to simulate"):
        simulate_eeg(3600.0, 20000.0, 1, n_channels=64)


# --------------------------------------------------------------------------- shipped file


def test_shipped_recording_reads_and_is_labelled() -> None:
    assert SHIPPED.is_file(), f"missing {SHIPPED}"
    assert "simulated" in SHIPPED.name
    assert SHIPPED.stat().st_size <= 10_000_000
    raw = mne.io.read_raw(SHIPPED, preload=True, verbose="error")
    assert len(raw.ch_names) >= 32
    assert raw.info["sfreq"] >= 500.0
    assert raw.n_times / raw.info["sfreq"] >= 120.0
    ratio = _alpha_ratio(raw.get_data(picks=["O1", "O2"]) * 1e6, raw.info["sfreq"])
    assert np.all((ratio > 0.4) & (ratio < 0.75)), ratio
    assert np.sum(raw.annotations.description == "blink") >= 3
    readme = SHIPPED_README.read_text(encoding="utf-8")
    assert "simulated" in readme.lower() and "License" in readme
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() in readme


def test_shipped_recording_is_what_the_readme_command_makes(tmp_path: Path) -> None:
    readme = SHIPPED_README.read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("closedloop simulate ")]
    assert len(commands) == 1, commands
    argv = shlex.split(commands[0])[1:]
    assert argv[1] == f"recordings/{SHIPPED.name}"
    argv[1] = str(tmp_path / SHIPPED.name)
    assert main(argv) == 0
    assert (tmp_path / SHIPPED.name).read_bytes() == SHIPPED.read_bytes()
