"""``closedloop report`` on real sessions: a replay of a real recording and a live session recorded to XDF."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import mne
import numpy as np
import pytest
import pyxdf
from scipy.signal import firwin, hilbert

from closedloop.cli import main
from closedloop.errors import DataError, UsageError
from closedloop.report import make_report
from tests.helpers.lsl import OutletThread
from tests.helpers.protocols import feedback_toml, phase_toml
from tests.helpers.recordings import EYES_CLOSED, XDF_MARKERS


def phase_protocol(*, baseline_s: float, method: str, gate: str) -> str:
    return phase_toml(
        "report-o1-trough",
        "O1",
        reference="none",
        method=method,
        target_phase_deg=180.0,
        amplitude_gate=gate,
        baseline_s=baseline_s,
    )


FEEDBACK_PROTOCOL = feedback_toml(
    "report-faa", baseline_s=10.0, window_s=2.0, smoothing_s=1.0, zscore=True
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- independent reference
def true_phase_deg(x: np.ndarray, sfreq: float, band: tuple[float, float], times_s: np.ndarray) -> np.ndarray:
    """The documented ground truth written out again: zero-phase Hamming FIR band-pass
    (transition min(2 Hz, low/2), 3.3/transition s long), odd-symmetric ends, Hilbert transform,
    read between samples by linear interpolation."""
    low, high = band
    numtaps = math.ceil(3.3 / min(2.0, low / 2.0) * sfreq) | 1
    h = firwin(numtaps, [low, high], pass_zero=False, window="hamming", fs=sfreq)
    half = numtaps // 2
    padded = np.concatenate([2 * x[0] - x[half:0:-1], x, 2 * x[-1] - x[-2 : -half - 2 : -1]])
    y = np.convolve(padded, h, mode="valid")
    z = hilbert(np.concatenate([np.zeros(half), y, np.zeros(half)]))[half:-half]
    k = np.arange(y.size)
    pos = np.asarray(times_s) * sfreq
    return np.degrees(np.angle(np.interp(pos, k, z.real) + 1j * np.interp(pos, k, z.imag)))


def margin_s(sfreq: float, band: tuple[float, float]) -> float:
    numtaps = math.ceil(3.3 / min(2.0, band[0] / 2.0) * sfreq) | 1
    return (numtaps // 2) / sfreq


def circ(errors_deg: np.ndarray) -> dict:
    z = np.exp(1j * np.radians(errors_deg))
    r = abs(z.mean())
    wrapped = (np.asarray(errors_deg) + 180.0) % 360.0 - 180.0
    return {
        "n": len(errors_deg),
        "mean_deg": float(np.degrees(np.angle(z.mean()))),
        "sd_deg": float(np.degrees(np.sqrt(-2 * np.log(r)))),
        "plv": float(r),
        "within_45": float(np.mean(np.abs(wrapped) <= 45.0)),
    }


def wrap(a):
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


# ---------------------------------------------------------------------- checks on the HTML
def figures(html_text: str) -> dict[str, np.ndarray]:
    """Every embedded PNG, decoded and read back as an image."""
    found = dict(re.findall(r'<img id="fig-(\w+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text))
    images = {}
    for key, data in found.items():
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG_MAGIC), key
        images[key] = matplotlib.image.imread(io.BytesIO(raw), format="png")
    return images


def assert_real_figure(image: np.ndarray) -> None:
    assert image.ndim == 3 and image.shape[0] >= 250 and image.shape[1] >= 400
    assert float(image[..., :3].std()) > 0.05  # something drawn, not a blank canvas


def assert_table_matches_json(html_text: str, numbers: dict) -> int:
    """Each number in the summary table equals its JSON value to the digits shown."""
    cells = re.findall(r'data-key="([\w.]+)">([^<]*)<', html_text)
    assert len(cells) >= 15
    for key, text in cells:
        value = numbers
        for part in key.split("."):
            value = value[part]
        if value is None:
            assert text == "n/a", key
            continue
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(float(text) - value) <= 0.5 * 10.0**-decimals + 1e-9, (key, text, value)
    return len(cells)


# ---------------------------------------------------------------------- a replay of a real recording
@pytest.fixture(scope="module")
def replay_report(tmp_path_factory, recordings):
    tmp = tmp_path_factory.mktemp("replay-report")
    proto = tmp / "o1.toml"
    proto.write_text(phase_protocol(baseline_s=10.0, method="auto", gate="percentile:50"))
    folder = tmp / "replay"
    assert main(["replay", str(EYES_CLOSED), "--protocol", str(proto), "--out", str(folder), "--quiet"]) == 0
    out = tmp / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "report", str(folder), "--out", str(out), "--quiet"],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return folder, out, proc.stderr


def test_replay_report_embeds_the_figures_and_says_latency_does_not_apply(replay_report):
    _, out, stderr = replay_report
    text = out.read_text()
    images = figures(text)
    # a phase protocol: no feedback figure; at least three figures for a replay
    assert set(images) == {"phases", "locked", "amplitude", "spectrum"}
    for image in images.values():
        assert_real_figure(image)
    assert re.search(r'id="fig-latency">Latency does not apply to a replay', text)
    assert "src=\"http" not in text and "<script" not in text  # self-contained
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["latency_ms"] is None and "not applicable" in numbers["latency_note"]
    assert f"{numbers['triggers']['delivered']} triggers" in stderr


def test_replay_report_numbers_match_the_json_and_an_independent_computation(replay_report):
    folder, out, _ = replay_report
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert assert_table_matches_json(out.read_text(), numbers) >= 20

    # the replay's own outputs, read without closedloop
    lines = (folder / "events.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    onsets = np.array([float(r["onset"]) for r in rows])
    est = np.array([float(r["phase_deg"]) for r in rows])
    target = np.array([float(r["target_phase_deg"]) for r in rows])
    summary = json.loads((folder / "summary.json").read_text())
    assert len(rows) > 30
    t = numbers["triggers"]
    assert t["delivered"] == len(rows) == summary["counts"]["triggers_delivered"]
    assert t["dropped"] == summary["counts"]["triggers_dropped"]
    assert t["rate_per_min"] == pytest.approx(60.0 * len(rows) / 60.0)
    assert t["rate_per_min_after_baseline"] == pytest.approx(60.0 * len(rows) / 50.0)
    assert t["interval_s_min"] == pytest.approx(np.diff(onsets).min()) and t["interval_s_min"] >= 0.25 - 1e-6
    with np.load(folder / "state.npz") as state:
        assert numbers["session"]["gate_open_share"] == pytest.approx(np.mean(state["gate"] > 0.5))
    assert numbers["session"]["gate_threshold_uv"] == pytest.approx(summary["counts"]["gate_threshold_uv"])

    expected_est = circ(wrap(est - target))
    for key in ("n", "plv", "within_45"):
        assert numbers["phase_estimated"][key] == pytest.approx(expected_est[key], abs=1e-9)

    # ground truth from the EDF read with MNE directly, and the truth written out again here
    raw = mne.io.read_raw(EYES_CLOSED, verbose="error")
    o1 = raw.get_data(picks=["O1.."])[0] * 1e6
    sfreq = raw.info["sfreq"]
    m = margin_s(sfreq, (8.0, 13.0))
    scored = (onsets >= m) & (onsets <= (o1.size - 1) / sfreq - m)
    truth = true_phase_deg(o1, sfreq, (8.0, 13.0), onsets[scored])
    expected = circ(wrap(truth - target[scored]))
    got = numbers["phase_true"]
    assert got["n"] == expected["n"] == scored.sum()
    assert got["n_unscored"] == len(rows) - scored.sum()
    assert abs(wrap(got["mean_deg"] - expected["mean_deg"])) < 2.0
    assert got["plv"] == pytest.approx(expected["plv"], abs=0.01)
    assert got["within_45"] == pytest.approx(expected["within_45"], abs=1.5 / got["n"])
    # strong eyes-closed alpha: the triggers really are near the trough
    assert got["plv"] > 0.6 and abs(got["mean_deg"]) < 45.0


def test_feedback_replay_report_draws_the_feedback_and_summarises_it(tmp_path, recordings):
    folder = tmp_path / "fb"
    proto = tmp_path / "faa.toml"
    proto.write_text(FEEDBACK_PROTOCOL)
    assert main(["replay", str(EYES_CLOSED), "--protocol", str(proto), "--out", str(folder), "--quiet"]) == 0
    out, json_path, numbers = make_report(folder)
    assert out == folder / "report.html" and json_path == folder / "report.json"
    text = out.read_text()
    images = figures(text)
    # feedback over time instead of empty trigger sections (no phases, no trigger table)
    assert set(images) == {"feedback", "amplitude", "spectrum"}
    assert_real_figure(images["feedback"])
    assert "Trigger phases" not in text and 'id="triggers"' not in text
    assert text.index('id="fig-feedback"') < text.index('id="fig-amplitude"')
    with np.load(folder / "state.npz") as state:
        fb = state["feedback"][np.isfinite(state["feedback"])]
    assert fb.size > 1000
    assert numbers["feedback"]["measure"] == "asymmetry"
    assert numbers["feedback"]["mean"] == pytest.approx(fb.mean())
    assert numbers["feedback"]["sd"] == pytest.approx(fb.std())
    assert numbers["triggers"]["delivered"] == 0
    assert json.loads(json_path.read_text()) == numbers


# ---------------------------------------------------------------------- a live session recorded to XDF
@pytest.fixture(scope="module")
def live_session(tmp_path_factory, recordings):
    import uuid

    tmp = tmp_path_factory.mktemp("live-report")
    proto = tmp / "o1.toml"
    proto.write_text(phase_protocol(baseline_s=2.0, method="echt", gate="none"))  # short baseline; many triggers
    raw = mne.io.read_raw(EYES_CLOSED, verbose="error")
    data = raw.get_data() * 1e6
    sfreq = raw.info["sfreq"]
    source_id = f"closedloop-test-{uuid.uuid4().hex[:12]}"
    record = tmp / "session.xdf"
    outlet = OutletThread(data, sfreq, source_id, chunk_size=2, index_channel=True, ch_names=raw.ch_names).start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "closedloop", "run", "--protocol", str(proto), "--source-id", source_id,
             "--duration", "6", "--record", str(record), "--marker-source-id", source_id + "-m",
             "--state-source-id", source_id + "-s"],
            check=False, capture_output=True, text=True, timeout=60,
        )
    finally:
        outlet.close()
    assert proc.returncode == 0, proc.stderr
    return record, proto, data, sfreq


def test_live_xdf_report_figures_latency_and_phases_match_an_independent_computation(live_session, tmp_path):
    record, proto, data, sfreq = live_session
    out = tmp_path / "live.html"
    assert main(["report", str(record), "--protocol", str(proto), "--out", str(out), "--quiet"]) == 0
    text = out.read_text()
    images = figures(text)
    assert set(images) == {"phases", "locked", "latency", "amplitude", "spectrum"}
    for image in images.values():
        assert_real_figure(image)
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert_table_matches_json(text, numbers)

    streams, _ = pyxdf.load_xdf(str(record), dejitter_timestamps=False)
    by_type = {s["info"]["type"][0]: s for s in streams}
    state = by_type["ClosedLoopState"]
    latency_ms = (state["time_stamps"] - np.asarray(state["time_series"])[:, 0]) * 1e3
    lat = numbers["latency_ms"]
    assert lat["n"] == latency_ms.size > 400
    for q in (50, 95, 99):
        assert lat[f"p{q}"] == pytest.approx(np.percentile(latency_ms, q), rel=1e-9)
    assert lat["max"] == pytest.approx(latency_ms.max())

    markers = by_type["Markers"]
    payloads = [json.loads(v[0]) for v in markers["time_series"]]
    assert numbers["triggers"]["delivered"] == len(payloads) >= 8
    lateness = (markers["time_stamps"] - np.array([p["scheduled_ts"] for p in payloads])) * 1e3
    assert numbers["delivery_error_ms"]["p99"] == pytest.approx(np.percentile(lateness, 99), rel=1e-9)

    # the true phase from the whole original recording: channel 0 carries the sample index, so
    # each marker time maps onto the original data without trusting the report's clock mapping
    eeg = by_type["EEG"]
    index = np.asarray(eeg["time_series"])[:, 0]
    original_pos = np.interp(markers["time_stamps"], eeg["time_stamps"], index)
    recorded_s = (markers["time_stamps"] - eeg["time_stamps"][0])
    m = margin_s(sfreq, (8.0, 13.0))
    scored = (recorded_s >= m) & (recorded_s <= (index.size - 1) / sfreq - m)
    o1 = data[list(mne.io.read_raw(EYES_CLOSED, verbose="error").ch_names).index("O1..")]
    truth = true_phase_deg(o1, sfreq, (8.0, 13.0), original_pos[scored] / sfreq)
    expected = circ(wrap(truth - 180.0))
    got = numbers["phase_true"]
    assert got["n"] == expected["n"] >= 5
    assert abs(wrap(got["mean_deg"] - expected["mean_deg"])) < 10.0
    assert got["plv"] == pytest.approx(expected["plv"], abs=0.1)


def _without_stream(record: Path, stream_id: int, out: Path) -> Path:
    """A copy of an XDF file without one stream's chunks (header, samples, offsets, footer)."""
    data = record.read_bytes()
    kept = bytearray(data[:4])
    pos = 4
    while pos < len(data):
        width = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 1 + width], "little")
        start = pos + 1 + width
        tag = int.from_bytes(data[start : start + 2], "little")
        chunk = data[pos : start + length]
        if not (tag in (2, 3, 4, 6) and int.from_bytes(data[start + 2 : start + 6], "little") == stream_id):
            kept += chunk
        pos = start + length
    out.write_bytes(bytes(kept))
    return out


def test_xdf_report_takes_the_protocol_the_session_recorded(live_session, tmp_path):
    record, proto, _, _ = live_session
    _, _, numbers = make_report(record, tmp_path / "r.html")
    _, _, given = make_report(record, tmp_path / "g.html", protocol=str(proto))
    assert numbers["phase_true"] == given["phase_true"] and numbers["phase_true"]["n"] >= 5
    assert numbers["session"]["baseline_s"] == 2.0 and numbers["session"]["estimator"] == "echt"
    assert not any("not a preset" in note for note in numbers["notes"])


def test_xdf_report_without_a_known_protocol_still_reports_and_says_why_no_truth(live_session, tmp_path):
    record, _, _, _ = live_session
    from closedloop.live import Recorder

    # a recording without the protocol stream (as closedloop wrote them before it had one)
    bare = _without_stream(record, Recorder.PROTOCOL, tmp_path / "bare.xdf")
    out, _, numbers = make_report(bare, tmp_path / "r.html")
    assert numbers["phase_true"] is None
    assert "give --protocol" in numbers["phase_true_note"]
    assert any("not a preset" in note for note in numbers["notes"])
    assert numbers["latency_ms"]["n"] > 400
    assert set(figures(out.read_text())) == {"phases", "latency", "amplitude"}  # no truth: no average, no spectrum
    assert "Ground truth: not available" in out.read_text()


# ---------------------------------------------------------------------- bad input
def test_missing_session_exits_3_with_a_sentence(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "report", str(tmp_path / "nowhere.xdf")],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 3
    assert "does not exist" in proc.stderr and "replay" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_folder_that_is_not_a_replay_names_the_missing_files(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(DataError, match=r"not a replay output folder: events.tsv missing"):
        make_report(tmp_path, tmp_path / "r.html")


def test_file_that_is_not_xdf_is_refused(tmp_path):
    bogus = tmp_path / "notes.xdf"
    bogus.write_text("hello")
    with pytest.raises(DataError, match="neither an XDF file nor a replay output folder"):
        make_report(bogus, tmp_path / "r.html")


def test_xdf_that_is_not_a_closedloop_session_lists_its_streams(tmp_path, recordings):
    with pytest.raises(DataError, match=r"no ClosedLoopState stream.*streams: .*Markers"):
        make_report(XDF_MARKERS, tmp_path / "r.html")


def test_out_must_be_an_html_file_in_an_existing_folder(replay_report, tmp_path):
    folder, _, _ = replay_report
    with pytest.raises(UsageError, match=r"--out must name an .html file"):
        make_report(folder, tmp_path / "r.txt")
    with pytest.raises(UsageError, match=r"does not exist; create it first"):
        make_report(folder, tmp_path / "missing" / "r.html")


def test_replay_whose_recording_moved_reports_without_truth_and_recording_option_restores_it(
    replay_report, tmp_path
):
    folder, _, _ = replay_report
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("events.tsv", "state.npz"):
        (moved / name).write_bytes((folder / name).read_bytes())
    summary = json.loads((folder / "summary.json").read_text())
    summary["recording"] = "gone/away.edf"
    (moved / "summary.json").write_text(json.dumps(summary))
    _, _, numbers = make_report(moved, tmp_path / "a.html")
    assert numbers["phase_true"] is None and "--recording" in numbers["phase_true_note"]
    _, _, numbers = make_report(moved, tmp_path / "b.html", recording=str(EYES_CLOSED))
    assert numbers["phase_true"]["n"] > 30
    assert Path(tmp_path / "b.json").is_file()


# ---------------------------------------------------------------------- what issue 16 added
def test_replay_report_has_a_per_trigger_table_matching_events_and_the_truth(replay_report):
    folder, out, _ = replay_report
    text = out.read_text()
    numbers = json.loads(out.with_suffix(".json").read_text())
    lines = (folder / "events.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    events = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    rows = numbers["per_trigger"]
    assert len(rows) == len(events) == numbers["triggers"]["delivered"]
    for row, ev in zip(rows, events):
        assert row["onset_s"] == pytest.approx(float(ev["onset"]))
        assert row["phase_deg"] == pytest.approx(float(ev["phase_deg"]))
        if row["true_phase_deg"] is not None:
            assert row["true_error_deg"] == pytest.approx(wrap(row["true_phase_deg"] - row["target_phase_deg"]))
    scored = [r["true_error_deg"] for r in rows if r["true_error_deg"] is not None]
    assert len(scored) == numbers["phase_true"]["n"]
    assert circ(np.array(scored))["plv"] == pytest.approx(numbers["phase_true"]["plv"], abs=1e-9)
    table = text[text.index('<table id="triggers">'):]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == len(rows) + 1
    first = re.findall(r'<td class="num">([^<]*)</td>', table)[:8]
    assert first[0] == "1" and float(first[1]) == pytest.approx(rows[0]["onset_s"], abs=5e-4)


def test_trigger_locked_average_shows_the_trough_the_triggers_aimed_at(replay_report):
    from closedloop.report import load_session, trigger_locked

    folder, out, _ = replay_report
    session = load_session(folder)
    grid, epochs, n = trigger_locked(session)
    assert n >= 30 and epochs.shape == (n, grid.size)
    mean = epochs.mean(axis=0)
    centre = int(np.argmin(np.abs(grid)))
    # triggers at the trough (180 deg): the average is a minimum at 0 ms, within a sixth of a cycle
    around = mean[centre - int(0.05 * session.sfreq) : centre + int(0.05 * session.sfreq) + 1]
    assert mean[centre] < 0 and mean[centre] <= around.min() + 0.2 * (mean.max() - mean.min())
    assert "Trigger-locked average" in out.read_text()


def test_header_names_the_band_learned_from_the_baseline(tmp_path, recordings):
    proto = tmp_path / "individual.toml"
    proto.write_text(phase_protocol(baseline_s=10.0, method="echt", gate="none").replace(
        "[band]\nlow_hz = 8.0\nhigh_hz = 13.0\n", "[band]\nlow_hz = 8.0\nhigh_hz = 13.0\nindividual = true\n"))
    folder = tmp_path / "replay"
    assert main(["replay", str(EYES_CLOSED), "--protocol", str(proto), "--out", str(folder), "--quiet"]) == 0
    summary = json.loads((folder / "summary.json").read_text())
    learned = summary["counts"]["band_hz"]
    assert summary["counts"]["individual_peak_hz"] is not None and learned != [8.0, 13.0]
    out, _, numbers = make_report(folder)
    assert numbers["session"]["band_hz"] == pytest.approx(learned)
    assert numbers["session"]["band_source"] == "learned"
    assert f"band {learned[0]:.2f}-{learned[1]:.2f} Hz (learned from the baseline: individual peak)" in out.read_text()


def test_amplitude_legend_sits_below_the_data_and_shadings_differ(replay_report):
    from closedloop.report import figure_amplitude, load_session

    folder, _, _ = replay_report
    session = load_session(folder)
    image = matplotlib.image.imread(io.BytesIO(figure_amplitude(session)), format="png")
    rgb = image[..., :3]
    # the data area after the baseline, top right (where the legend used to be), holds no legend box:
    # no run of near-white legend background wider than a tenth of the axes
    h, w = rgb.shape[:2]
    region = rgb[int(0.08 * h) : int(0.3 * h), int(0.6 * w) : int(0.95 * w)]
    assert not (region.min(axis=2) > 0.99).all(axis=0).sum() > 0.5 * region.shape[1]
    # the baseline's hatch blue and the hold's red are both drawn, and are not alike
    baseline_blue = np.array([0xCF, 0xE0, 0xF5]) / 255.0
    blue = np.abs(rgb - (0.5 * baseline_blue + 0.5)).max(axis=2) < 0.06
    reddish = (rgb[..., 0] > rgb[..., 2] + 0.15) & (rgb[..., 0] > 0.8)
    assert blue.sum() > 500 and reddish.sum() > 50
