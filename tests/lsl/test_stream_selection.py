"""Choosing the input stream (CONTRACTS.md "Choosing the input stream") among real LSL outlets:
selectors combine, type and host in any case, only regularly sampled numeric streams are EEG
candidates, more than one match is refused with each listed."""

from __future__ import annotations

import socket

import numpy as np
import pylsl
import pytest

from closedloop.errors import DataError, StreamError
from closedloop.lsl.selection import StreamSelector, choose_stream, xpath_literal
from tests.helpers.faults import (
    LIVE_CH_NAMES,
    LIVE_SFREQ,
    FaultyOutlet,
    alpha_stream,
    run_cli,
    run_live,
    write_protocol,
)

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


def _outlet(name, stype, source_id, *, sfreq=250.0, fmt="float32", n=4):
    info = pylsl.StreamInfo(name, stype, n, sfreq, fmt, source_id)
    return pylsl.StreamOutlet(info)


@pytest.fixture
def lab(source_id):
    """An amplifier with an annotations and a marker stream under its own source_id (as mne-lsl's
    PlayerLSL publishes), a second EEG stream of the same name, and a string stream."""
    outlets = {
        "amp": _outlet("amp", "EEG", source_id),
        "annotations": _outlet("amp-annotations", "annotations", source_id, sfreq=0.0, fmt="double64", n=3),
        "markers": _outlet("amp-markers", "Markers", source_id, sfreq=0.0, fmt="string", n=1),
        "twin": _outlet("amp", "eeg", source_id + "-twin"),
        "text": _outlet("text", "EEG", source_id + "-text", fmt="string", n=1),
    }
    yield source_id, outlets
    outlets.clear()


def test_selectors_combine_and_type_and_host_match_in_any_case(lab):
    sid, _ = lab
    host = socket.gethostname()
    chosen = choose_stream(StreamSelector(source_id=sid), 5.0)
    assert (chosen.name(), chosen.type()) == ("amp", "EEG")  # not the annotations or markers
    chosen = choose_stream(StreamSelector(name="amp", source_id=sid + "-twin"), 5.0)
    assert chosen.source_id() == sid + "-twin"
    # "EEG" finds the twin's "eeg" and the other way round; the host in any case narrows nothing
    chosen = choose_stream(StreamSelector(stype="Eeg", source_id=sid + "-twin", host=host.upper()), 5.0)
    assert chosen.source_id() == sid + "-twin"
    with pytest.raises(StreamError, match=rf"no LSL stream with source_id '{sid}' and host 'elsewhere'"):
        choose_stream(StreamSelector(source_id=sid, host="elsewhere"), 1.0)
    # a type that only the annotations stream has: found, but no EEG candidate (exit 3)
    with pytest.raises(DataError, match=r"'amp-annotations' has an irregular rate"):
        choose_stream(StreamSelector(source_id=sid, stype="annotations"), 5.0)
    with pytest.raises(DataError, match=r"'text' carries strings; EEG must be numeric"):
        choose_stream(StreamSelector(source_id=sid + "-text"), 5.0)


def test_two_streams_of_one_name_are_refused_with_each_listed(lab):
    sid, _ = lab
    with pytest.raises(StreamError) as err:
        choose_stream(StreamSelector(name="amp"), 5.0)
    text = str(err.value)
    assert text.startswith("2 EEG streams match name 'amp': ")
    host = socket.gethostname()
    for source_id in (sid, sid + "-twin"):
        assert f"source_id {source_id!r}, host {host!r}, 4 ch, 250 Hz, float32" in text
    assert "Choose one with --source-id" in text


def test_xpath_literals_with_quotes_select_exactly(source_id):
    names = ["o'brien", 'say "hi"', "both ' and \""]
    outlets = [_outlet(n, "EEG", f"{source_id}-{i}") for i, n in enumerate(names)]
    try:
        for i, name in enumerate(names):
            assert xpath_literal(name).count(name.split("'")[0]) >= 1
            chosen = choose_stream(StreamSelector(name=name, stype="eeg"), 5.0)
            assert chosen.source_id() == f"{source_id}-{i}"
    finally:
        outlets.clear()


def test_run_with_two_eeg_streams_and_no_selector_exits_4_listing_both(tmp_path, source_id):
    data = alpha_stream(30.0)
    outlets = [
        FaultyOutlet(data, LIVE_SFREQ, f"{source_id}-{k}", name=f"amp-{k}").start() for k in (1, 2)
    ]
    try:
        protocol = write_protocol(tmp_path / "p.toml")
        done = run_cli("run", "--protocol", str(protocol), "--duration", "3", "--resolve-timeout", "10")
    finally:
        for outlet in outlets:
            outlet.close()
    assert done.returncode == 4, done.stderr
    assert "EEG streams match type 'EEG'" in done.stderr
    for k in (1, 2):
        assert f"'amp-{k}' (type 'EEG', source_id '{source_id}-{k}', host " in done.stderr
    assert "Traceback" not in done.stderr


def test_start_line_names_the_chosen_stream_completely(tmp_path, source_id):
    outlet = FaultyOutlet(alpha_stream(20.0), LIVE_SFREQ, source_id, name="named-amp").start()
    try:
        done, summary = run_live(tmp_path, source_id, 3.0)
    finally:
        outlet.close()
    assert done.returncode == 0, done.stderr
    host = socket.gethostname()
    expected = (
        f"on 'named-amp' (type 'EEG', source_id '{source_id}', host '{host}', "
        f"{len(LIVE_CH_NAMES)} ch, {LIVE_SFREQ:g} Hz, float32)"
    )
    assert expected in done.stderr, done.stderr
    assert summary["input"]["source_id"] == source_id and summary["input"]["host"] == host
    assert summary["input"]["identity"]["pinned"]["labels"] == LIVE_CH_NAMES
    np.testing.assert_equal(summary["input"]["sfreq"], LIVE_SFREQ)
