"""closedloop sweep: many recordings x a grid of settings, on local workers and on a Dask cluster.

The recordings are the shared real ones, cropped to 25 s in the test so that each cell takes a
fraction of a second; a damaged copy and a recording without the protocol's channel stand for the
broken recordings of a real archive.
"""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from closedloop.cli import main
from closedloop.groundtruth import GroundTruth, wrap_deg
from closedloop.protocol import load_protocol, protocol_to_toml, with_overrides
from closedloop.sweep import parse_set, plan_sweep, run_sweep
from tests.helpers.recordings import EEGMAT, EYES_CLOSED, EYES_OPEN, XDF_UNICORN

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

CROP_S = 25.0
PROTOCOL = "default"  # O2, no reference, 8-13 Hz, 10 s baseline
GRID = ["estimator.method=wiener,ar", "trigger.target_phase_deg=0,180"]
#: run-to-run timing: the only columns allowed to differ between two runs of one sweep
TIMING = ("wall_s", "speed_x")
CONTRACT_COLUMNS = (
    "recording", "estimator.method", "trigger.target_phase_deg", "n_triggers", "rate_per_min",
    "circ_mean_deg", "circ_sd_deg", "plv", "within45", "error",
)  # fmt: skip


def _crop(source: Path, target: Path) -> Path:
    import mne

    raw = mne.io.read_raw(source, preload=True, verbose="error").crop(0.0, CROP_S)
    mne.export.export_raw(target, raw, fmt="edf", overwrite=True, verbose="error")
    return target


@pytest.fixture(scope="module")
def recordings_dir(recordings, tmp_path_factory) -> Path:
    """Two good recordings (64 ch at 160 Hz, 21 ch at 500 Hz) and a damaged one, in a folder."""
    folder = tmp_path_factory.mktemp("recs")
    _crop(EYES_CLOSED, folder / "a_S001R02.edf")
    _crop(EEGMAT, folder / "b_Subject04.edf")
    (folder / "c_damaged.edf").write_bytes(EYES_OPEN.read_bytes()[:20000])
    (folder / "notes.txt").write_text("not a recording\n")
    return folder


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "closedloop", "sweep", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fid:
        reader = csv.DictReader(fid)
        return list(reader.fieldnames or []), list(reader)


def _without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def local_run(recordings_dir, tmp_path_factory) -> Path:
    """The sweep through the command line, on two local worker processes."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    done = _sweep(
        str(recordings_dir), str(XDF_UNICORN), "--protocol", PROTOCOL,
        *[a for s in GRID for a in ("--set", s)], "--out", str(out), "--events", "--jobs", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "16 cells (16 run now" in done.stdout
    return out


def test_rows_columns_and_failed_recordings(local_run, recordings_dir):
    header, rows = _read(local_run / "results.csv")
    assert set(CONTRACT_COLUMNS) <= set(header)
    assert {"subject", "session", "task", "run", "chunk_size", "cell"} <= set(header)
    names = [Path(r["recording"]).name for r in rows]
    # recordings in the order found (folder sorted, then the file), settings in grid order
    assert names == [n for n in ("a_S001R02.edf", "b_Subject04.edf", "c_damaged.edf",
                                 XDF_UNICORN.name) for _ in range(4)]  # fmt: skip
    settings = [(r["estimator.method"], r["trigger.target_phase_deg"]) for r in rows[:4]]
    assert settings == [("wiener", "0.0"), ("wiener", "180.0"), ("ar", "0.0"), ("ar", "180.0")]
    for row in rows:
        name = Path(row["recording"]).name
        if name == "c_damaged.edf":
            assert re.search(r"could not read recording .*damaged or truncated", row["error"])
            assert row["n_triggers"] == "" and row["circ_sd_deg"] == ""
        elif name == XDF_UNICORN.name:
            assert "channel 'O2' is not in the data" in row["error"]
            # BIDS entities from a BIDS-style file name outside a BIDS tree
            assert (row["subject"], row["session"], row["task"], row["run"]) == ("P001", "S001", "Default", "001")
        else:
            assert row["error"] == "", row["error"]
            assert int(row["n_triggers"]) >= 10
            assert 0 < float(row["circ_sd_deg"]) < 90
            assert -180 < float(row["circ_mean_deg"]) <= 180
            assert 0 < float(row["plv"]) <= 1 and 0 <= float(row["within45"]) <= 1
            assert int(row["chunk_size"]) == round(float(row["sfreq"]) * 0.01)
            assert float(row["rate_per_min"]) == pytest.approx(
                60 * int(row["n_triggers"]) / (float(row["duration_s"]) - 10.0), abs=1e-3
            )
    # wiener, the project's best, is better than ar on both good recordings
    good = [r for r in rows if not r["error"]]
    for name in ("a_S001R02.edf", "b_Subject04.edf"):
        sd = {r["estimator.method"]: float(r["circ_sd_deg"]) for r in good
              if r["recording"].endswith(name) and r["trigger.target_phase_deg"] == "0.0"}  # fmt: skip
        assert sd["wiener"] < sd["ar"]
    page = (local_run / "summary.html").read_text()
    assert page.count("src='data:image/png;base64,") == 2
    assert "Failed cells" in page and "c_damaged.edf" in page


def test_cells_deliver_the_triggers_of_closedloop_replay(local_run, tmp_path, capsys):
    """Each good cell's triggers are byte for byte those of `closedloop replay` with its protocol
    (with BLAS on one thread, as a cell runs it: the estimator's fit differs in its last digits
    with the thread count)."""
    from threadpoolctl import threadpool_limits

    _, rows = _read(local_run / "results.csv")
    base = load_protocol(PROTOCOL)
    good = [r for r in rows if not r["error"]]
    assert len(good) == 8
    for row in good:
        protocol = with_overrides(
            base,
            {
                "estimator.method": row["estimator.method"],
                "trigger.target_phase_deg": float(row["trigger.target_phase_deg"]),
            },
        )
        path = tmp_path / "p.toml"
        path.write_text(protocol_to_toml(protocol))
        out = tmp_path / row["cell"]
        with threadpool_limits(limits=1):
            assert main(["replay", row["recording"], "--protocol", str(path), "--out", str(out), "--quiet"]) == 0
        events = (local_run / "events" / f"{row['cell']}.tsv").read_bytes()
        assert events == (out / "events.tsv").read_bytes()
        assert len(events.splitlines()) - 1 == int(row["n_triggers"])
    capsys.readouterr()


def test_scores_are_the_true_phase_at_delivery_minus_the_target(local_run):
    """The row's statistics, recomputed here from the cell's triggers and a ground truth."""
    import mne

    _, rows = _read(local_run / "results.csv")
    row = next(r for r in rows if r["recording"].endswith("b_Subject04.edf") and r["estimator.method"] == "ar")
    raw = mne.io.read_raw(row["recording"], preload=True, verbose="error")
    o2 = next(i for i, name in enumerate(raw.ch_names) if name.upper().endswith("O2"))
    truth = GroundTruth(raw.get_data()[o2] * 1e6, raw.info["sfreq"], (8.0, 13.0))
    with open(local_run / "events" / f"{row['cell']}.tsv") as fid:
        events = list(csv.DictReader(fid, delimiter="\t"))
    onsets = np.array([float(e["onset"]) for e in events])
    targets = np.array([float(e["target_phase_deg"]) for e in events])
    last_s = (raw.n_times - 1) / raw.info["sfreq"]
    keep = (onsets >= 10.0) & (onsets <= last_s - 1.0)
    errors = wrap_deg(truth.phase_at(onsets[keep]) - targets[keep])
    vector = np.mean(np.exp(1j * np.radians(errors)))
    assert int(row["n_scored"]) == keep.sum() > 10
    assert float(row["plv"]) == pytest.approx(abs(vector), abs=1e-5)
    assert float(row["circ_mean_deg"]) == pytest.approx(math.degrees(np.angle(vector)), abs=1e-3)
    assert float(row["circ_sd_deg"]) == pytest.approx(math.degrees(math.sqrt(-2 * math.log(abs(vector)))), abs=1e-3)
    assert float(row["within45"]) == pytest.approx(np.mean(np.abs(errors) <= 45), abs=1e-5)


@pytest.fixture(scope="module")
def dask_scheduler():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0", host="127.0.0.1"
    ) as cluster:
        yield cluster.scheduler_address


def _plan(recordings_dir: Path, grid=GRID):
    protocol = load_protocol(PROTOCOL)
    return plan_sweep(
        [recordings_dir, XDF_UNICORN], protocol, [parse_set(s, protocol) for s in grid]
    )


def test_dask_cluster_gives_the_same_rows_as_local_workers(local_run, recordings_dir, dask_scheduler, tmp_path):
    from distributed import Client

    outcome = run_sweep(_plan(recordings_dir), tmp_path / "dask", scheduler=dask_scheduler, keep_events=True)
    assert outcome.n_run == 16 and outcome.n_failed == 8
    assert outcome.backend.startswith(f"Dask cluster {dask_scheduler} (2 workers)")
    local_header, local_rows = _read(local_run / "results.csv")
    dask_header, dask_rows = _read(tmp_path / "dask" / "results.csv")
    assert dask_header == local_header
    assert _without_timing(dask_rows) == _without_timing(local_rows)
    for row in local_rows:
        if not row["error"]:
            name = f"{row['cell']}.tsv"
            assert (tmp_path / "dask" / "events" / name).read_bytes() == (local_run / "events" / name).read_bytes()
    # the cells ran in the workers' processes, and left nothing behind on the scheduler
    with Client(dask_scheduler) as client:
        assert len(client.nthreads()) == 2
        assert not client.has_what() or not any(client.has_what().values())


RESUME_GRID = ["trigger.target_phase_deg=0,90,180,-90,45"]


def _wait_for_rows(path: Path, n: int, proc: subprocess.Popen, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n + 1:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    pytest.fail(f"{path} did not reach {n} rows in {deadline_s} s")


def _workers(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def resume_reference(recordings_dir, tmp_path_factory) -> list[dict[str, str]]:
    """The 10-cell sweep of the resumption tests, run without interruption."""
    folder = tmp_path_factory.mktemp("resume-ref")
    rec = [recordings_dir / "a_S001R02.edf", recordings_dir / "b_Subject04.edf"]
    protocol = load_protocol(PROTOCOL)
    plan = plan_sweep(rec, protocol, [parse_set(s, protocol) for s in RESUME_GRID])
    run_sweep(plan, folder, jobs=2, summary=False)
    return _read(folder / "results.csv")[1]


def test_killed_sweep_resumes_without_redoing_finished_cells(recordings_dir, resume_reference, tmp_path):
    out = tmp_path / "sweep"
    args = [
        str(recordings_dir / "a_S001R02.edf"), str(recordings_dir / "b_Subject04.edf"), "--protocol",
        PROTOCOL, "--set", RESUME_GRID[0], "--out", str(out), "--jobs", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "sweep", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for_rows(out / "results.csv", 3, proc)
        workers = _workers(proc.pid)
        assert workers, "no worker process found"
        proc.send_signal(signal.SIGKILL)  # as a crash or a power cut: no clean-up at all
        proc.wait(timeout=10)
        # the workers notice their parent is gone and end by themselves
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"worker processes left running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (out / "results.csv").read_text()
    lines = text.splitlines(keepends=True)
    complete = [ln for ln in lines[1:] if ln.endswith("\n")]
    finished = {r["cell"]: r for r in csv.DictReader(lines[:1] + complete)}
    assert 3 <= len(finished) < 10, "the sweep must be killed part-way"

    done = _sweep(*args)
    assert done.returncode == 0, done.stderr
    assert f"{len(finished)} kept from an earlier run; {10 - len(finished)} to run" in done.stderr
    header, rows = _read(out / "results.csv")
    assert len(rows) == 10 and not any(r["error"] for r in rows)
    for row in rows:
        if row["cell"] in finished:
            assert row == finished[row["cell"]]  # wall_s too: kept, not run again
    assert _without_timing(rows) == _without_timing(resume_reference)
    # a third run has nothing to do
    again = _sweep(*args)
    assert again.returncode == 0 and "10 kept from an earlier run; nothing to run" in again.stderr
    assert _read(out / "results.csv")[1] == rows


def test_a_worker_that_dies_costs_no_cell(recordings_dir, resume_reference, tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "closedloop", "sweep", str(recordings_dir / "a_S001R02.edf"),
            str(recordings_dir / "b_Subject04.edf"), "--protocol", PROTOCOL, "--set", RESUME_GRID[0],
            "--out", str(out), "--jobs", "2",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_rows(out / "results.csv", 1, proc)
        victim = _workers(proc.pid)[0]
        victim.kill()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "a worker process died 1 time(s)" in stderr
    rows = _read(out / "results.csv")[1]
    assert _without_timing(rows) == _without_timing(resume_reference)


def test_bids_root(recordings_dir, tmp_path):
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    root = tmp_path / "bids"
    for subject, session, run, name in (("01", "pre", 1, "a_S001R02.edf"), ("02", None, None, "b_Subject04.edf")):
        raw = mne.io.read_raw(recordings_dir / name, verbose="error")
        path = BIDSPath(subject=subject, session=session, task="rest", run=run, root=root, datatype="eeg")
        write_raw_bids(raw, path, overwrite=True, verbose="error")
    derived = root / "derivatives" / "clean" / "sub-01" / "eeg"
    derived.mkdir(parents=True)
    (derived / "sub-01_task-rest_desc-clean_eeg.edf").write_bytes((recordings_dir / "a_S001R02.edf").read_bytes())
    protocol = load_protocol(PROTOCOL)
    plan = plan_sweep([root], protocol, [parse_set("estimator.method=wiener", protocol)])
    outcome = run_sweep(plan, tmp_path / "out", jobs=1)
    assert outcome.n_failed == 0
    _, rows = _read(tmp_path / "out" / "results.csv")
    assert [(r["subject"], r["session"], r["task"], r["run"]) for r in rows] == [
        ("01", "pre", "rest", "1"),
        ("02", "", "rest", ""),
    ]
    assert all("derivatives" not in r["recording"] for r in rows)
    assert all(int(r["n_triggers"]) > 0 for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "estimator.metod=ar"], r'estimator\.metod: unknown key \[estimator\] metod \(did you mean "method"\?\)'),
        (["--set", "trigger.target_phase_deg=0,400"], r"trigger\.target_phase_deg=400.*\[-180, 180\]"),
        (["--set", "band.low_hz=9,14"], r"band\.low_hz=14.*above low_hz = 14 Hz"),
        (["--set", "estimator.method=ar,ar"], r"lists ar more than once"),
        (["--set", "trigger.target_phase_deg=-180,180"], r"are the same protocol"),
        (["--set", "estimator.method"], r"is not KEY=V1,V2"),
        (["--set", "estimator.method=wiener,"], r"has an empty value"),
        (["--set", "chunk_size=0"], r"chunk_size: 0 is not accepted: expected a whole number >= 1"),
        (["--set", "estimator.method=ar", "--set", "estimator.method=wiener"], r"given more than once"),
        (["--set", "estimator.method=ar", "--set", "estimator.params.bogus=1"], r"estimator 'ar' has no parameter 'bogus'; accepted: .*order"),
        (["--set", "kind=feedback"], r'needs kind = "phase"'),
        (["--jobs", "0"], r"--jobs must be a whole number of worker processes >= 1"),
    ],
)
def test_bad_settings_are_refused_before_any_work(recordings_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main(["sweep", str(recordings_dir / "a_S001R02.edf"), "--protocol", PROTOCOL, "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err), err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "results.csv").exists()


def test_nothing_to_sweep(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["sweep", str(tmp_path / "empty"), "--protocol", PROTOCOL, "--out", str(tmp_path / "out")])
    assert code == 3
    assert "no recording found in the folder" in capsys.readouterr().err


def test_unreachable_scheduler(recordings_dir, tmp_path, capsys):
    code = main(["sweep", str(recordings_dir / "a_S001R02.edf"), "--protocol", PROTOCOL, "--out",
                 str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in err and "Traceback" not in err
    assert os.path.exists(tmp_path / "out" / "results.csv")  # the (empty) results stay for a retry


def test_a_recording_changed_after_planning_is_refused_then_swept_anew(recordings_dir, tmp_path):
    path = tmp_path / "rec.edf"
    path.write_bytes((recordings_dir / "a_S001R02.edf").read_bytes())
    protocol = load_protocol(PROTOCOL)
    grid = [parse_set("estimator.method=wiener", protocol)]
    plan = plan_sweep([path], protocol, grid)
    _crop(EEGMAT, path)  # another recording at the same path, after the sweep was planned
    outcome = run_sweep(plan, tmp_path / "out", jobs=1, summary=False)
    assert outcome.n_failed == 1
    row = _read(tmp_path / "out" / "results.csv")[1][0]
    assert "is not the file the sweep planned" in row["error"] and str(path) in row["error"]
    # planned again, the new file is a new cell: the old row goes aside, the new one is run
    again = run_sweep(plan_sweep([path], protocol, grid), tmp_path / "out", jobs=1, summary=False)
    assert (again.n_run, again.n_reused, again.n_failed, again.n_moved) == (1, 0, 0, 1)
    (aside,) = (tmp_path / "out" / "superseded").iterdir()
    assert [r["cell"] for r in _read(aside)[1]] == [row["cell"]]
    rows = _read(tmp_path / "out" / "results.csv")[1]
    assert len(rows) == 1 and rows[0]["error"] == "" and rows[0]["sfreq"] == "500.0"


def test_every_cell_failing_is_exit_3_with_the_rows_kept(recordings_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sweep", str(recordings_dir / "c_damaged.edf"), "--protocol", PROTOCOL, "--out", str(out),
                 "--jobs", "1", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert "every cell of the sweep failed; the first: could not read recording" in err
    (row,) = _read(out / "results.csv")[1]
    assert "damaged or truncated" in row["error"]
