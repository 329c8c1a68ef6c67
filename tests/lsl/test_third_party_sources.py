"""Real amplifier streams as users have them, against `closedloop run`: mne-lsl's PlayerLSL (with
and without its annotations stream under the same source_id, several chunk sizes) and pylsl
outlets written the way vendor apps write them (volts, millivolts, microvolts; one push-time stamp
per chunk; the same stamp on every sample; stamps ahead of the clock; no units at all; two streams
under one source_id).

Each run records what it received; `closedloop replay` of that very recording, with the same
protocol (the `default` preset: O2 alpha, triggers often) and the source's chunk size, is the
reference. Every source either gets live triggers within 20 % of replay's, or is refused with a
message naming the problem. `pytest -s` prints, per source, the two counts and the latency.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mne
import pytest

from closedloop.offline import read_events_tsv
from tests.helpers.faults import env, finish, read_summary, run_cli, start_cli
from tests.helpers.lsl import VendorOutlet
from tests.helpers.recordings import EYES_CLOSED

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

#: Seconds of each live run (the default preset learns for 10 s, then triggers several times a second).
RUN_S = 40.0
#: Live trigger count against replay's on the same samples.
TOLERANCE = 0.20


@dataclass
class Outcome:
    code: int
    stderr: str
    summary: dict | None
    n_live: int
    n_replay: int | None


def _run_args(tmp_path: Path, source_id: str, *extra: str) -> list[str]:
    return [
        "run", "--protocol", "default", "--source-id", source_id,
        "--marker-source-id", source_id + "-m", "--state-source-id", source_id + "-s",
        "--resolve-timeout", "30", "--duration", str(RUN_S),
        "--record", str(tmp_path / f"{source_id}.xdf"),
        "--summary-json", str(tmp_path / f"{source_id}.json"), *extra,
    ]


def live_against_replay(tmp_path: Path, cases: dict[str, tuple[str, int, tuple[str, ...]]]) -> dict[str, Outcome]:
    """Run `closedloop run` for every case at once ((source_id, chunk size, extra args) each), then
    replay each recording with that chunk size; the outcome of each."""
    procs = {tag: start_cli(*_run_args(tmp_path, sid, *extra)) for tag, (sid, _, extra) in cases.items()}
    out = {}
    for tag, proc in procs.items():
        sid, chunk, _ = cases[tag]
        code, err = finish(proc, timeout=RUN_S + 90)
        path = tmp_path / f"{sid}.json"
        summary = read_summary(path) if path.exists() else None
        n_replay = None
        if code == 0:
            rep = run_cli("replay", str(tmp_path / f"{sid}.xdf"), "--protocol", "default",
                          "--chunk-size", str(chunk), "--out", str(tmp_path / f"{sid}-replay"), "--quiet")
            assert rep.returncode == 0, rep.stderr
            n_replay = len(read_events_tsv(tmp_path / f"{sid}-replay" / "events.tsv"))
        out[tag] = Outcome(code, err, summary, summary["triggers"] if summary else 0, n_replay)
    return out


def report(title: str, outcomes: dict[str, Outcome]) -> None:
    print(f"\n{title}: live vs replay triggers; latency p50/p99 (ms, from the sample's time, never "
          "after its arrival); arrival minus the source's own stamp, median (ms; negative = ahead)")
    for tag, o in outcomes.items():
        if o.summary is None:
            print(f"  {tag:22s} refused: {o.stderr.strip().splitlines()[-1]}")
            continue
        ts = o.summary["timestamps"]
        print(
            f"  {tag:22s} live {o.n_live:3d}  replay {o.n_replay if o.n_replay is not None else '-':>3}  "
            f"latency {o.summary['latency_ms_p50']:.3f}/{o.summary['latency_ms_p99']:.3f}  "
            f"stamp lag {ts.get('arrival_minus_stamp_ms_median')}  ahead {ts.get('stamps_ahead')}  "
            f"gaps {o.summary['gaps']}  plan lead {ts.get('plan_lead_ms_max')} ms"
        )


def assert_close_to_replay(tag: str, o: Outcome) -> None:
    assert o.code == 0, (tag, o.stderr)
    assert o.n_replay is not None and o.n_replay >= 15, (tag, o.n_replay)
    assert abs(o.n_live - o.n_replay) <= TOLERANCE * o.n_replay, (tag, o.n_live, o.n_replay, o.stderr)
    s = o.summary
    assert s["units"]["status"] == "ok", (tag, s["units"])
    # no samples lost (a push-stamping sender in this busy test process can be held up beyond the
    # jitter the sample clock learnt, which reads as a short gap: at most 1 %)
    assert s["dropped_samples"] <= 0.01 * s["samples"], (tag, s["dropped_samples"], s["samples"])
    assert s["latency_ms_p50"] > 0 and s["latency_ms_max"] > 0, tag
    assert "Traceback" not in o.stderr


@pytest.fixture(scope="module")
def eyes_closed():
    raw = mne.io.read_raw_edf(EYES_CLOSED, preload=True, verbose="error")
    return raw


#: mne-lsl's PlayerLSL in a process of its own, as a user runs it (players sharing this test's
#: process would hold up each other's pushes through the interpreter lock).
PLAYER = """
import sys
import mne
from mne_lsl.player import PlayerLSL
path, chunk, source_id, annotations, encoding, name = sys.argv[1:]
raw = mne.io.read_raw(path, preload=True, verbose="error")
player = PlayerLSL(raw, chunk_size=int(chunk), source_id=source_id, annotations=annotations == "1",
                   annotations_encoding=encoding, name=name).start()
print("started", flush=True)
sys.stdin.read()  # until the test closes our stdin
player.stop()
"""


def start_player(path: Path, chunk: int, source_id: str, annotations: bool, encoding: str, name: str):
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAYER, str(path), str(chunk), source_id, "1" if annotations else "0",
         encoding, name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env(),
    )
    lines = []
    for line in proc.stdout:  # mne-lsl may log first
        lines.append(line)
        if line.strip() == "started":
            return proc
    raise AssertionError(f"the player did not start: {''.join(lines)}")


def stop_player(proc) -> None:
    try:
        proc.stdin.close()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_mne_lsl_player_with_and_without_annotations_in_several_chunk_sizes(tmp_path, source_id, eyes_closed):
    configs = {  # tag: (chunk size, annotations, encoding)
        "player chunk 10": (10, False, "one-hot"),
        "player chunk 10 + annot": (10, True, "one-hot"),
        "player chunk 1 + annot(str)": (1, True, "string"),
        "player chunk 32 + annot": (32, True, "one-hot"),
    }
    assert len(eyes_closed.annotations) > 0  # so the annotations stream is published
    players, cases = [], {}
    try:
        for k, (tag, (chunk, with_annotations, encoding)) in enumerate(configs.items()):
            sid = f"{source_id}-p{k}"
            players.append(start_player(EYES_CLOSED, chunk, sid, with_annotations, encoding, f"MNE-LSL-Player-{k}"))
            extra = ("--record-stream", sid) if with_annotations else ()  # and record the annotations too
            cases[tag] = (sid, chunk, extra)
        outcomes = live_against_replay(tmp_path, cases)
    finally:
        for player in players:
            stop_player(player)
    report("mne-lsl PlayerLSL, S001R02", outcomes)
    for tag, o in outcomes.items():
        assert_close_to_replay(tag, o)
        sid, chunk, extra = cases[tag]
        # the EEG stream was chosen, by its lower-case type, and read in volts (mne-lsl's code "0")
        assert "type 'eeg', source_id" in o.stderr and "64 ch, 160 Hz, double64" in o.stderr
        assert o.summary["input"]["units"] == ["0"]
        # PlayerLSL stamps each chunk ahead of the clock: said, and latencies stay positive
        assert o.summary["timestamps"]["stamps_ahead"], (tag, o.summary["timestamps"])
        assert "ms ahead of this machine's clock" in o.stderr
        if extra:
            recorded = {r["type"] for r in o.summary["recorded_streams"]}
            assert recorded == {"annotations"}, (tag, o.summary["recorded_streams"])


@pytest.mark.slow
def test_vendor_style_outlets_in_every_unit_and_stamping(tmp_path, source_id, eyes_closed):
    data = eyes_closed.get_data() * 1e6
    names = list(eyes_closed.ch_names)
    sfreq = eyes_closed.info["sfreq"]
    configs = {  # tag: (unit written, scale from µV, stamping, chunk)
        "volts": ("V", 1e-6, "backfill", 8),
        "millivolts": ("mV", 1e-3, "backfill", 8),
        "microvolts (µV)": ("µV", 1.0, "backfill", 8),
        "push-time stamp/chunk": ("microvolts", 1.0, "push", 8),
        "same stamp every sample": ("uV", 1.0, "same", 8),
        "stamps 50 ms ahead": ("uV", 1.0, "ahead", 8),
        "volts, no units stated": ("", 1e-6, "backfill", 8),
    }
    outlets, cases = [], {}
    for k, (tag, (unit, scale, stamping, chunk)) in enumerate(configs.items()):
        sid = f"{source_id}-v{k}"
        outlets.append(VendorOutlet(data, sfreq, sid, ch_names=names, unit=unit, scale=scale,
                                    stamping=stamping, chunk_size=chunk, seed=k).start())
        cases[tag] = (sid, chunk, ())
    try:
        outcomes = live_against_replay(tmp_path, cases)
    finally:
        for outlet in outlets:
            outlet.close()
    report("pylsl outlets as vendor apps write them, S001R02", outcomes)
    refused = outcomes.pop("volts, no units stated")
    for tag, o in outcomes.items():
        assert_close_to_replay(tag, o)
    assert outcomes["push-time stamp/chunk"].summary["timestamps"]["jitter_ms"] > 5.0
    assert outcomes["same stamp every sample"].summary["timestamps"]["stamps_per_chunk"]
    assert outcomes["stamps 50 ms ahead"].summary["timestamps"]["stamps_ahead"]
    # no units and values in volts: held, never triggered, and told what the values look like
    assert refused.code == 0 and refused.n_live == 0
    assert "the values look like volts, but are taken as microvolts" in refused.stderr
    assert "give --units V" in refused.stderr
    assert refused.summary["units"]["looks_like"] == "volts"


def test_two_streams_under_one_source_id_are_refused_listing_both(tmp_path, source_id, eyes_closed):
    data = eyes_closed.get_data()[:, : 20 * 160] * 1e6
    names = list(eyes_closed.ch_names)
    outlets = [VendorOutlet(data, 160.0, source_id, name=f"amp-{k}", ch_names=names).start() for k in (1, 2)]
    try:
        done = run_cli(*_run_args(tmp_path, source_id), timeout=60)
    finally:
        for outlet in outlets:
            outlet.close()
    assert done.returncode == 4, done.stderr
    assert f"2 EEG streams match source_id '{source_id}'" in done.stderr
    assert "'amp-1' (type 'EEG'" in done.stderr and "'amp-2' (type 'EEG'" in done.stderr
    assert not (tmp_path / f"{source_id}.json").exists()
