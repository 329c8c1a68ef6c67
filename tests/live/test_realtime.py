"""`closedloop run --realtime`: the loop really runs under SCHED_FIFO where the system allows it."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from closedloop import realtime
from tests.helpers.faults import (
    LIVE_CH_NAMES,
    LIVE_SFREQ,
    alpha_stream,
    run_cli,
    start_cli,
    write_protocol,
)
from tests.helpers.lsl import OutletThread

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


def _fifo_allowed() -> bool:
    """Whether this machine lets a thread of ours take SCHED_FIFO (tried in a throwaway thread)."""
    result = {}

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            result["ok"] = True
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (OSError, AttributeError):
            result["ok"] = False

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return result["ok"]


def _policies(pid: int) -> list[tuple[int, int]]:
    """(policy, priority) of every thread of process ``pid``."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out.append((os.sched_getscheduler(int(tid)), os.sched_getparam(int(tid)).sched_priority))
        except OSError:
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_FIFO is Linux's")
def test_run_realtime_puts_the_loop_and_liblsl_threads_under_sched_fifo(tmp_path, source_id):
    allowed = _fifo_allowed()
    proto = write_protocol(tmp_path / "p.toml")
    summary_path = tmp_path / "summary.json"
    outlet = OutletThread(alpha_stream(20.0), LIVE_SFREQ, source_id, chunk_size=5, ch_names=LIVE_CH_NAMES).start()
    try:
        proc = start_cli("run", "--protocol", proto, "--source-id", source_id, "--duration", "8", "--realtime",
                         "--realtime-priority", "40", "--summary-json", summary_path,
                         "--marker-source-id", source_id + "-m", "--state-source-id", source_id + "-s")
        seen: list[tuple[int, int]] = []
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if summary_path.exists():
                break
            try:
                seen = _policies(proc.pid) or seen
            except FileNotFoundError:
                break
            if sum(1 for pol, _ in seen if pol == getattr(os, "SCHED_FIFO", -1)) >= 2:
                break
            time.sleep(0.2)
        _, err = proc.communicate(timeout=60)
    finally:
        outlet.close()
    assert proc.returncode == 0, err
    summary = json.loads(summary_path.read_text())
    rt = summary["realtime"]
    assert rt["requested"] is True
    assert summary["samples"] > 1000 and summary["triggers"] >= 3
    if allowed:
        assert rt["fifo"] is True and rt["priority"] == 40, rt
        fifo = [prio for pol, prio in seen if pol == os.SCHED_FIFO]
        # the loop and the liblsl threads created after the request
        assert len(fifo) >= 2 and max(fifo) == 40, seen
    else:
        assert rt["fifo"] is False and "refused" in " ".join(rt["notes"]), rt
        assert "real-time scheduling was refused" in err


def test_realtime_priority_without_realtime_is_a_usage_error(source_id):
    proc = run_cli("run", "--protocol", "default", "--source-id", source_id,
                   "--realtime-priority", "50", "--resolve-timeout", "1", timeout=60)
    assert proc.returncode == 2
    assert "--realtime-priority needs --realtime" in proc.stderr


def test_realtime_priority_out_of_range_is_a_usage_error_naming_the_range(source_id):
    proc = run_cli("run", "--protocol", "default", "--source-id", source_id, "--realtime",
                   "--realtime-priority", "99", "--resolve-timeout", "1", timeout=60)
    assert proc.returncode == 2
    assert "--realtime-priority: real-time priority must be between 1 and 98, got 99." in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_FIFO is Linux's")
def test_helper_threads_step_below_the_loop_and_a_fit_returns_to_normal():
    if not _fifo_allowed():
        pytest.skip("this machine refuses SCHED_FIFO")
    result = {}

    def worker():
        status = realtime.request(30, lock_memory=False)
        result["status"] = status
        inner = {}

        def helper():
            realtime.background()
            inner["helper"] = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
            realtime.normal()
            inner["fit"] = os.sched_getscheduler(0)

        h = threading.Thread(target=helper)
        h.start()
        h.join()
        result.update(inner)
        realtime.normal()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert result["status"].fifo and result["status"].priority == 30
    assert result["helper"] == (os.SCHED_FIFO, 29)
    assert result["fit"] == os.SCHED_OTHER
    with pytest.raises(ValueError, match="between 1 and 98"):
        realtime.request(99)
