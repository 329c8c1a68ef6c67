"""Issue 6: live triggers (play -> run over LSL) match replay triggers on the same recording."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import pyxdf

from closedloop.offline import read_events_tsv
from tests.helpers.protocols import phase_toml
from tests.helpers.recordings import EYES_CLOSED

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


@pytest.mark.slow
@pytest.mark.parametrize("gate", ["percentile:50", "rate:60"])
def test_live_triggers_match_replay_within_two_samples(tmp_path, source_id, recordings, gate):
    # rate:60: a gate that learns from the deliveries as well as the samples (issue 17)
    chunk = 4
    sfreq = 160.0
    proto = tmp_path / "p.toml"
    proto.write_text(
        phase_toml("live-vs-replay", "O1", reference="none", baseline_s=10.0, amplitude_gate=gate)
    )
    record = tmp_path / "live.xdf"
    run = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "run", "--protocol", str(proto), "--source-id", source_id,
         "--resolve-timeout", "30", "--duration", "55", "--record", str(record),
         "--marker-source-id", source_id + "-m", "--state-source-id", source_id + "-s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    play = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "play", str(EYES_CLOSED), "--source-id", source_id,
         "--chunk-size", str(chunk), "--duration", "59", "--index-channel", "--wait-consumers", "30", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        run_out, run_err = run.communicate(timeout=120)
    finally:
        play.terminate()
        play.communicate(timeout=10)
    assert run.returncode == 0, run_err

    streams, _ = pyxdf.load_xdf(str(record), dejitter_timestamps=False)
    by_type = {s["info"]["type"][0]: s for s in streams}
    eeg = by_type["EEG"]
    index = np.asarray(eeg["time_series"])[:, 0]
    stamps = np.asarray(eeg["time_stamps"])
    assert index[0] == 0, "the live run must see the recording from its first sample"
    t0 = float(np.median(stamps - index / sfreq))
    live = np.asarray(by_type["Markers"]["time_stamps"]) - t0
    live_end = (index[-1]) / sfreq

    out = tmp_path / "replay"
    rep = subprocess.run(
        [sys.executable, "-m", "closedloop", "replay", str(EYES_CLOSED), "--protocol", str(proto),
         "--chunk-size", str(chunk), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert rep.returncode == 0, rep.stderr
    replay = np.array([row["onset"] for row in read_events_tsv(out / "events.tsv")])
    replay = replay[replay <= live_end - 0.5]
    live = live[live <= live_end - 0.5]
    # rate:60 counts its rate per minute the gate could trigger in: this recording's artifact
    # holds take about half of it
    least = 60 if gate.startswith("percentile") else 25
    assert len(live) >= least and len(replay) >= least
    # the live engine fits its estimator in the background after the baseline (a few hundred ms
    # with the loop running on); replay fits in line, so its first trigger or two have no live twin

    tol = 2.0 / sfreq
    live_matched = np.mean([np.min(np.abs(replay - t)) <= tol for t in live])
    replay_matched = np.mean([np.min(np.abs(live - t)) <= tol for t in replay])
    print(f"live-equals-replay ({gate}): {len(live)} live, {len(replay)} replay triggers; "
          f"live matched {live_matched:.1%}, replay matched {replay_matched:.1%} within 2 samples")
    assert live_matched >= 0.95, (live_matched, len(live), len(replay))
    assert replay_matched >= 0.95, (replay_matched, len(live), len(replay))
