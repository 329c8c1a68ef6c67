"""Bad recordings and bad streams through the real program (`python -m closedloop replay` and
`run` as processes, real files, real LSL outlets): each is either processed correctly or refused
with a clear message and the documented exit code, and none fires a trigger on bad data.
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pylsl
import pytest
import pyxdf

from closedloop.engine import SETTLE_S
from closedloop.offline import read_events_tsv
from tests.helpers.faults import (
    LIVE_CH_NAMES,
    LIVE_PROTOCOL,
    LIVE_SFREQ,
    FaultyOutlet,
    MarkerConsumer,
    alpha_stream,
    circular_mean_deg,
    read_summary,
    run_cli,
    run_live,
    run_live_together,
    sine_phase_deg,
    write_protocol,
)
from tests.helpers.protocols import phase_toml
from tests.helpers.recordings import EYES_CLOSED, XDF_MARKERS

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

HOLD_S = 1.0  # [artifact] hold_s of the protocols below (the default)
ACCEPTED = "Accepted formats:"

# The default preset's decision rule on O2 with a short baseline (the recording is 60 s).
REPLAY_PROTOCOL = phase_toml("replay-reliability", "O2", baseline_s=10.0)

# (start_s, stop_s, what): bad stretches written into a copy of the eyes-closed recording
BAD_STRETCHES = [
    (15.0, 16.0, "nan"),  # every channel NaN (a dropped USB frame written as NaN)
    (22.0, 22.5, "inf"),  # +Inf on the protocol's channel only
    (30.0, 32.0, "rail"),  # every channel stuck at the amplifier's rail (saturated)
    (38.0, 40.0, "flat"),  # every channel exactly 0 (electrode cable off, amplifier zeroed)
    (46.0, 46.2, "spike"),  # an 800 µV movement spike on O2
]


# ---------------------------------------------------------------------- recordings
@pytest.fixture(scope="module")
def eyes_closed(recordings) -> tuple[np.ndarray, float, list[str]]:
    raw = mne.io.read_raw_edf(EYES_CLOSED, preload=True, verbose="error")
    return raw.get_data() * 1e6, raw.info["sfreq"], list(raw.ch_names)


def write_fif(path: Path, data_uv: np.ndarray, sfreq: float, ch_names: list[str]) -> Path:
    info = mne.create_info(ch_names, sfreq, "eeg")
    mne.io.RawArray(data_uv * 1e-6, info, verbose="error").save(path, fmt="double", verbose="error")
    return path


def replay(recording: Path, protocol: Path, out: Path, *extra: str):
    return run_cli(
        "replay", str(recording), "--protocol", str(protocol), "--out", str(out), "--quiet", *extra
    )


def onsets(out: Path) -> np.ndarray:
    return np.array([row["onset"] for row in read_events_tsv(out / "events.tsv")])


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("truncated.edf", lambda src: src.read_bytes()[:20_000], "could not read recording"),
        ("header-only.edf", lambda src: src.read_bytes()[:300], "damaged or truncated"),
        ("empty.edf", lambda src: b"", "could not read recording"),
        ("noise.edf", lambda src: np.random.default_rng(1).bytes(5000), "could not read recording"),
        (
            "recording.xyz",
            lambda src: src.read_bytes(),
            "is not a format closedloop can read (.xyz)",
        ),
        ("missing.edf", None, "does not exist"),
    ],
)
def test_unreadable_or_unknown_recordings_exit_3_with_the_accepted_formats(
    tmp_path, recordings, name, make, message
):
    path = tmp_path / name
    if make is not None:
        path.write_bytes(make(EYES_CLOSED))
    protocol = write_protocol(tmp_path / "p.toml", REPLAY_PROTOCOL)
    done = replay(path, protocol, tmp_path / "out")
    assert done.returncode == 3, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    if make is not None:
        assert ACCEPTED in done.stderr
    assert not (tmp_path / "out" / "events.tsv").exists()


def test_truncated_xdf_is_read_up_to_the_damage(tmp_path, recordings):
    """LabRecorder files cut short by a crash: the complete chunks are replayed, the rest is not."""
    path = tmp_path / "cut.xdf"
    whole = XDF_MARKERS.read_bytes()
    path.write_bytes(whole[: len(whole) // 2 + 7])  # cut inside a chunk
    protocol = write_protocol(
        tmp_path / "p.toml", REPLAY_PROTOCOL.replace('channel = "O2"', 'channel = "ch2"')
    )
    done = replay(path, protocol, tmp_path / "out", "--stream", "EEG")
    assert done.returncode == 0, done.stderr
    full = pyxdf.load_xdf(str(XDF_MARKERS), dejitter_timestamps=False)[0]
    n_full = max(len(s["time_stamps"]) for s in full if s["info"]["type"] == ["EEG"])
    n_cut = read_summary(tmp_path / "out" / "summary.json")["n_samples"]
    assert 0.3 * n_full < n_cut < 0.7 * n_full


def test_protocol_channel_missing_from_the_recording_exits_3_naming_the_nearest(
    tmp_path, recordings
):
    protocol = write_protocol(tmp_path / "p.toml", REPLAY_PROTOCOL.replace('"O2"', '"PO9"'))
    done = replay(EYES_CLOSED, protocol, tmp_path / "out")
    assert done.returncode == 3, done.stderr
    assert "channel 'PO9' is not in the data" in done.stderr
    assert "Nearest:" in done.stderr and "'Po7.'" in done.stderr


def test_sampling_rate_too_low_for_the_band_exits_3_with_the_rate_needed(tmp_path, recordings):
    protocol = write_protocol(
        tmp_path / "p.toml",
        REPLAY_PROTOCOL.replace("low_hz = 8.0", "low_hz = 65.0").replace(
            "high_hz = 13.0", "high_hz = 75.0"
        ),
    )
    done = replay(EYES_CLOSED, protocol, tmp_path / "out")  # 160 Hz: 0.9 x Nyquist = 72 Hz
    assert done.returncode == 3, done.stderr
    assert "a sampling rate of 160 Hz cannot carry the protocol's band up to 75 Hz" in done.stderr
    assert "at least 166.667 Hz is needed" in done.stderr


def test_nan_inf_saturated_flat_and_spiky_stretches_never_trigger(tmp_path, eyes_closed):
    data, sfreq, names = eyes_closed
    o2 = names.index("O2..")
    bad = data.copy()
    for start, stop, what in BAD_STRETCHES:
        span = slice(int(start * sfreq), int(stop * sfreq))
        if what == "nan":
            bad[:, span] = np.nan
        elif what == "inf":
            bad[o2, span] = np.inf
        elif what == "rail":
            bad[:, span] = 3276.7
        elif what == "flat":
            bad[:, span] = 0.0
        else:
            bad[o2, span] += 800.0
    protocol = write_protocol(tmp_path / "p.toml", REPLAY_PROTOCOL)
    clean_fif = write_fif(tmp_path / "clean_raw.fif", data, sfreq, names)
    bad_fif = write_fif(tmp_path / "bad_raw.fif", bad, sfreq, names)
    done_clean = replay(clean_fif, protocol, tmp_path / "clean")
    done_bad = replay(bad_fif, protocol, tmp_path / "bad")
    assert done_clean.returncode == 0, done_clean.stderr
    assert done_bad.returncode == 0, done_bad.stderr
    clean, got = onsets(tmp_path / "clean"), onsets(tmp_path / "bad")

    windows = [(start, stop + HOLD_S) for start, stop, _ in BAD_STRETCHES]
    clean_there = 0
    for (start, stop), (_, _, what) in zip(windows, BAD_STRETCHES):
        inside = got[(got >= start) & (got <= stop)]
        assert inside.size == 0, f"{what}: triggers at {inside} s, inside the bad stretch + hold"
        clean_there += bool(np.any((clean >= start) & (clean <= stop)))
    # the clean recording does trigger in (nearly) all those windows: the hold, not the signal,
    # kept them quiet (the gate may be closed on the real alpha in one of them)
    assert clean_there >= len(windows) - 1, clean_there
    # away from the bad stretches (and their settling) processing goes on as before
    assert got.size > 0.5 * clean.size
    summary = read_summary(tmp_path / "bad" / "summary.json")["counts"]
    n_bad_stretch = sum(int((b - a) * sfreq) for a, b, w in BAD_STRETCHES if w in ("nan", "inf"))
    assert summary["bad_samples"] >= n_bad_stretch


def test_dc_offset_of_5_mv_changes_nothing(tmp_path, eyes_closed):
    """Real g.USBamp and OpenBCI data sit millivolts off zero: same triggers as without it."""
    data, sfreq, names = eyes_closed
    protocol = write_protocol(tmp_path / "p.toml", REPLAY_PROTOCOL)
    offsets = np.linspace(-5000.0, 5000.0, len(names))  # each channel its own offset, up to 5 mV
    plain = write_fif(tmp_path / "plain_raw.fif", data, sfreq, names)
    shifted = write_fif(tmp_path / "dc_raw.fif", data + offsets[:, None] + 5000.0, sfreq, names)
    for src, out in ((plain, "plain"), (shifted, "dc")):
        done = replay(src, protocol, tmp_path / out)
        assert done.returncode == 0, done.stderr
    a, b = onsets(tmp_path / "plain"), onsets(tmp_path / "dc")
    assert a.size > 20
    assert a.size == b.size
    np.testing.assert_allclose(a, b, atol=1.0 / sfreq)
    sa = read_summary(tmp_path / "plain" / "summary.json")["counts"]
    sb = read_summary(tmp_path / "dc" / "summary.json")["counts"]
    assert sb["gate_threshold_uv"] == pytest.approx(sa["gate_threshold_uv"], rel=1e-3)
    assert sb["bad_samples"] == sa["bad_samples"]


# ---------------------------------------------------------------------- live streams
class _BadStamps:
    """Stamps that jump back 0.3 s during ``back_s`` and repeat one value during ``dup_s``
    (seconds from the start); a class, so that it goes to the outlet's process."""

    def __init__(self, chunk_s: float, back_s: tuple[float, float], dup_s: tuple[float, float]) -> None:
        self.chunk_s, self.back_s, self.dup_s = chunk_s, back_s, dup_s
        self.last_good = 0.0

    def __call__(self, number: int, true: float) -> float:
        t = (number + 1) * self.chunk_s
        if self.back_s[0] <= t < self.back_s[1]:
            return true - 0.3  # the clock jumps back 0.3 s for 0.1 s
        if self.dup_s[0] <= t < self.dup_s[1]:
            return self.last_good  # the same timestamp again and again
        self.last_good = true
        return true


def test_nan_runs_and_non_monotonic_or_repeated_timestamps_in_a_live_stream_never_trigger(
    tmp_path, source_id
):
    data = alpha_stream(40.0)
    nan_s = (5.0, 5.5)
    back_s, dup_s = (6.7, 6.8), (8.2, 8.3)
    data[2, int(nan_s[0] * LIVE_SFREQ) : int(nan_s[1] * LIVE_SFREQ)] = np.nan
    chunk_s = 5 / LIVE_SFREQ
    outlet = FaultyOutlet(data, LIVE_SFREQ, source_id, stamp=_BadStamps(chunk_s, back_s, dup_s)).start()
    markers = MarkerConsumer(source_id + "-m")
    try:
        done, summary = run_live(tmp_path, source_id, 9.0)
    finally:
        markers.disconnect()
        outlet.close()
    assert done.returncode == 0, done.stderr
    counts = summary["engine"]
    # the jump back is one step back; every repeated stamp is another
    assert counts["nonmonotonic_timestamps"] >= 1 + round((dup_s[1] - dup_s[0]) / chunk_s) - 1
    assert counts["bad_samples"] >= (nan_s[1] - nan_s[0]) * LIVE_SFREQ
    stamps = np.array(markers.stamps) - outlet.t0  # seconds of stream time
    for start, stop in (nan_s, back_s, dup_s):
        # from the moment the first bad chunk arrives (a trigger planned on the chunk before may
        # still go out within that chunk's horizon) to the end of the hold
        begin = start + chunk_s
        end = stop - 1.0 / LIVE_SFREQ + max(HOLD_S, SETTLE_S)  # the last bad sample + the hold
        inside = stamps[(stamps >= begin) & (stamps < end)]
        assert inside.size == 0, (
            f"triggers at {inside} s in the bad stretch {start}-{stop} s + hold"
        )
    assert stamps.size >= 5, "no triggers on the good stretches"
    assert np.any(stamps > dup_s[1] + SETTLE_S) or np.any(stamps > back_s[1] + SETTLE_S)


def test_actual_rate_2_percent_off_nominal_counts_no_gaps_and_stays_phase_locked(
    tmp_path, source_id
):
    factors = (1.02, 0.98)
    ids = [f"{source_id}-{i}" for i in range(len(factors))]
    outlets = [
        FaultyOutlet(alpha_stream(40.0), LIVE_SFREQ, sid, rate_factor=f).start()
        for sid, f in zip(ids, factors)
    ]
    consumers = [MarkerConsumer(sid + "-m") for sid in ids]
    try:
        results = run_live_together(tmp_path, [(sid, 6.0, ()) for sid in ids])
    finally:
        for item in (*consumers, *outlets):
            item.disconnect() if isinstance(item, MarkerConsumer) else item.close()
    for factor, outlet, markers, (code, err, summary) in zip(factors, outlets, consumers, results):
        assert code == 0, err
        assert summary["gaps"] == 0 and summary["dropped_samples"] == 0, (factor, summary)
        assert summary["engine"]["nonmonotonic_timestamps"] == 0
        assert summary["stalls"] == 0
        stamps = np.array(markers.stamps)
        assert stamps.size >= 5, factor
        true_phase = sine_phase_deg(stamps, outlet.t0, LIVE_SFREQ * factor, LIVE_SFREQ)
        mean, spread = circular_mean_deg(true_phase)
        assert abs(mean) < 25.0 and spread < 35.0, (factor, mean, spread)


def test_integer_streams_are_scaled_by_their_units(tmp_path, source_id):
    cases = [("int16", "microvolts", 1.0), ("int32", "nanovolts", 1000.0)]
    ids = [f"{source_id}-{fmt}" for fmt, _, _ in cases]
    outlets = [
        FaultyOutlet(
            alpha_stream(40.0) * scale, LIVE_SFREQ, sid, channel_format=fmt, unit=unit
        ).start()
        for sid, (fmt, unit, scale) in zip(ids, cases)
    ]
    consumers = [MarkerConsumer(sid + "-m") for sid in ids]
    try:
        results = run_live_together(
            tmp_path, [(sid, 6.0, ("--record", str(tmp_path / f"{sid}.xdf"))) for sid in ids]
        )
    finally:
        for item in (*consumers, *outlets):
            item.disconnect() if isinstance(item, MarkerConsumer) else item.close()
    for sid, (fmt, _, _), outlet, markers, (code, err, summary) in zip(
        ids, cases, outlets, consumers, results
    ):
        assert code == 0, err
        assert summary["dropped_samples"] == 0
        assert len(markers.markers) >= 5, fmt
        # the 20 µV cosine reads about 20 µV whatever the stream's integer units
        amplitude = np.median([m["amplitude"] for m in markers.markers])
        assert 12.0 < amplitude < 28.0, (fmt, amplitude)
        mean, spread = circular_mean_deg(
            sine_phase_deg(np.array(markers.stamps), outlet.t0, LIVE_SFREQ)
        )
        assert abs(mean) < 25.0 and spread < 35.0, (fmt, mean, spread)
        # recorded as received: the stream's integer format, the index exact
        streams, _ = pyxdf.load_xdf(
            str(tmp_path / f"{sid}.xdf"), synchronize_clocks=False, dejitter_timestamps=False
        )
        eeg = next(s for s in streams if s["info"]["type"] == ["EEG"])
        assert eeg["info"]["channel_format"] == [fmt]
        index = np.asarray(eeg["time_series"])[:, 0].astype(np.int64)
        np.testing.assert_array_equal(index, np.arange(index[0], index[0] + len(index)))


def _bare_outlet(
    source_id: str, sfreq: float, channel_format: str, labels: list[str]
) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo("bad-eeg", "EEG", len(labels), sfreq, channel_format, source_id)
    chans = info.desc().append_child("channels")
    for label in labels:
        chans.append_child("channel").append_child_value("label", label)
    return pylsl.StreamOutlet(info)


@pytest.mark.parametrize(
    "case, message",
    [
        ("string", "carries strings; EEG must be numeric"),
        ("irregular", "has an irregular rate"),
        ("missing channel", "channel 'O2' is not in the data"),
        ("rate too low", "a sampling rate of 100 Hz cannot carry the protocol's band up to 48 Hz"),
    ],
)
def test_unusable_streams_exit_3_with_a_clear_message(tmp_path, source_id, case, message):
    protocol_text = LIVE_PROTOCOL
    outlet = None
    pusher = None
    if case == "string":
        pusher = FaultyOutlet(
            alpha_stream(20.0), LIVE_SFREQ, source_id, channel_format="string"
        ).start()
    elif case == "irregular":
        outlet = _bare_outlet(source_id, 0.0, "float32", LIVE_CH_NAMES)
    elif case == "missing channel":
        outlet = _bare_outlet(source_id, LIVE_SFREQ, "float32", ["Fp1", "Fp2", "F3", "F4"])
    else:
        outlet = _bare_outlet(source_id, 100.0, "float32", LIVE_CH_NAMES)
        protocol_text = LIVE_PROTOCOL.replace("low_hz = 8.0", "low_hz = 40.0").replace(
            "high_hz = 13.0", "high_hz = 48.0"
        )
    try:
        done, summary = run_live(tmp_path, source_id, 5.0, protocol_text)
    finally:
        if pusher is not None:
            pusher.close()
        del outlet
    assert done.returncode == 3, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert summary is None  # refused before the session started
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("closedloop run: error: "), done.stderr
