"""Protocol files made up by hypothesis (valid and invalid TOML, wrong types, out-of-range
values, unknown keys, random unicode), each run through `closedloop replay` on a short real
recording: it runs (exit 0) or is refused (exit 2, or 3 for what the data cannot give) with a
message on stderr; never a traceback, never exit 1.
"""

from __future__ import annotations

import string
from pathlib import Path

import mne
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from closedloop.cli import main
from tests.helpers.faults import run_cli
from tests.helpers.protocols import BASE, to_toml
from tests.helpers.recordings import EYES_CLOSED

FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VALID = {
    **BASE,
    "name": "fuzz",
    "estimator": {"method": "ar"},
    "trigger": {**BASE["trigger"], "baseline_s": 3.0},
}

# the keys each section knows, with values that make sense there (mixed with nonsense below)
SENSIBLE = {
    "": {
        "name": st.text(min_size=0, max_size=12),
        "kind": st.sampled_from(["phase", "feedback", "Phase", "power", ""]),
        "description": st.text(max_size=20),
    },
    "signal": {
        "channel": st.sampled_from(["O2", "o2", "EEG O2", "O1..", "Cz", "C3", "X9", ""]),
        "reference": st.sampled_from(
            ["none", "average", "hjorth", "bipolar", "weights", "laplace"]
        ),
        "neighbors": st.lists(st.sampled_from(["O1", "Oz", "PO8", "P8", "O2", "Q1"]), max_size=4),
        "bipolar_with": st.sampled_from(["O1", "O2", "Pz", "Z9"]),
        "weights": st.dictionaries(
            st.sampled_from(["O2", "O1", "Pz", "Q"]), st.floats(-2, 2), max_size=3
        ),
        "notch_hz": st.sampled_from([0.0, 50.0, 60.0, 55.0, -50]),
    },
    "band": {
        "low_hz": st.floats(-5.0, 90.0),
        "high_hz": st.floats(-5.0, 120.0),
        "individual": st.booleans(),
        "peak_search_hz": st.lists(st.floats(-5.0, 40.0), min_size=0, max_size=3),
        "half_width_hz": st.floats(-1.0, 10.0),
    },
    "estimator": {
        "method": st.sampled_from(["auto", "ar", "echt", "etp", "wiener", "hilbert", "AR"]),
        "params": st.dictionaries(
            st.sampled_from(["order", "window_s", "ridge", "holdout", "edge_s", "bogus"]),
            st.one_of(st.integers(-5, 200), st.floats(-2.0, 10.0), st.sampled_from(["auto", "x"])),
            max_size=2,
        ),
    },
    "trigger": {
        "target_phase_deg": st.floats(-400.0, 400.0),
        "phase_tolerance_deg": st.floats(-10.0, 200.0),
        "min_interval_s": st.floats(-1.0, 5.0),
        "min_interval_jitter_s": st.floats(-1.0, 1.0),
        "amplitude_gate": st.sampled_from(
            ["none", "percentile:50", "percentile:150", "uv:5", "uv:-1", "db:3"]
        ),
        "baseline_s": st.floats(-1.0, 20.0),
        "max_triggers": st.integers(-3, 50),
        "technical_delay_s": st.floats(-0.1, 2.0),
        "event": st.sampled_from(["stim", "sham", "", "tab\there"]),
        "random_phase": st.booleans(),
        "pulses": st.integers(-1, 12),
        "pulse_interval_s": st.floats(0.0, 0.2),
    },
    "artifact": {
        "enabled": st.booleans(),
        "max_abs_uv": st.floats(-10.0, 500.0),
        "flat_uv": st.floats(-1.0, 5.0),
        "flat_window_s": st.floats(-1.0, 2.0),
        "saturation_uv": st.floats(-1.0, 5000.0),
        "hold_s": st.floats(-1.0, 3.0),
    },
    "feedback": {
        "measure": st.sampled_from(["power", "ratio", "asymmetry", "alpha"]),
        "channels": st.lists(st.sampled_from(["O2", "O1", "F4", "F3", "Q7"]), max_size=3),
        "window_s": st.floats(-1.0, 4.0),
        "smoothing_s": st.floats(-1.0, 2.0),
        "zscore": st.booleans(),
        "ratio_band_hz": st.lists(st.floats(-1.0, 40.0), max_size=3),
    },
}

# anything TOML can hold, for values of the wrong type
ANY_VALUE = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=6), inner, max_size=3),
    ),
    max_leaves=6,
)


@st.composite
def protocol_tables(draw) -> dict:
    """A protocol table: the valid one, edited key by key with sensible, wrong-typed or unknown entries."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in VALID.items()}
    for _ in range(draw(st.integers(0, 5))):
        section = draw(st.sampled_from(sorted(SENSIBLE)))
        table = data if section == "" else data.setdefault(section, {})
        if not isinstance(table, dict):
            continue
        action = draw(
            st.sampled_from(["sensible", "sensible", "wrong type", "unknown key", "delete"])
        )
        key = draw(st.sampled_from(sorted(SENSIBLE[section])))
        if action == "sensible":
            table[key] = draw(SENSIBLE[section][key])
        elif action == "wrong type":
            table[key] = draw(ANY_VALUE)
        elif action == "unknown key":
            table[draw(st.text(string.ascii_letters + "_", min_size=1, max_size=8))] = draw(
                ANY_VALUE
            )
        else:
            table.pop(key, None)
    return data


@pytest.fixture(scope="module")
def short_recording(tmp_path_factory, recordings) -> Path:
    """The first 8 s of the eyes-closed recording (real EEG, 160 Hz, 64 channels)."""
    raw = mne.io.read_raw_edf(EYES_CLOSED, preload=True, verbose="error").crop(0, 8.0)
    path = tmp_path_factory.mktemp("fuzz") / "short_raw.fif"
    raw.save(path, verbose="error")
    return path


def check_outcome(code: int, err: str, text: str) -> None:
    shown = f"protocol:\n{text}\nstderr:\n{err}"
    event(f"exit {code}")
    assert code in (0, 2, 3), shown
    assert "Traceback" not in err and "internal error" not in err, shown
    if code != 0:
        lines = [line for line in err.strip().splitlines() if line]
        assert lines and lines[-1].startswith("closedloop replay: error: "), shown
        assert len(lines[-1]) > len("closedloop replay: error: ") + 10, shown


def replay_in_process(
    capsys, recording: Path, protocol_text: str, workdir: Path
) -> tuple[int, str]:
    path = workdir / "fuzz.toml"
    path.write_text(protocol_text, encoding="utf-8", errors="surrogatepass")
    capsys.readouterr()
    code = main(
        [
            "replay",
            str(recording),
            "--protocol",
            str(path),
            "--out",
            str(workdir / "out"),
            "--quiet",
        ]
    )
    return code, capsys.readouterr().err


@FUZZ_SETTINGS
@given(data=protocol_tables())
def test_generated_protocols_run_or_are_refused_with_exit_2_or_3(
    data, short_recording, tmp_path, capsys
):
    text = to_toml(data)
    code, err = replay_in_process(capsys, short_recording, text, tmp_path)
    check_outcome(code, err, text)
    if code == 0:
        assert (tmp_path / "out" / "events.tsv").is_file()


@FUZZ_SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.text(max_size=4)), min_size=1, max_size=4)
)
def test_damaged_toml_text_runs_or_is_refused_with_exit_2(edits, short_recording, tmp_path, capsys):
    text = to_toml(VALID)
    for position, insert in edits:
        cut = position % (len(text) + 1)
        text = text[:cut] + insert + text[cut + len(insert) // 2 + 1 :]
    code, err = replay_in_process(capsys, short_recording, text, tmp_path)
    check_outcome(code, err, text)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(max_size=200))
def test_random_unicode_is_refused_with_exit_2(text, short_recording, tmp_path, capsys):
    code, err = replay_in_process(capsys, short_recording, text, tmp_path)
    check_outcome(code, err, text)
    assert code == 2  # no random text is a complete protocol


@pytest.mark.parametrize(
    "text, message",
    [
        ("\x00\x01 not toml at all \u2603", "not valid TOML"),
        (
            to_toml({**VALID, "band": {"low_hz": "eight", "high_hz": 13.0}}),
            'low_hz = "eight" is not accepted',
        ),
        (
            to_toml({**VALID, "trigger": {**VALID["trigger"], "min_interval_s": 0.01}}),
            "min_interval_s = 0.01",
        ),
        (to_toml({**VALID, "triger": {}}), 'did you mean "trigger"'),
    ],
)
def test_bad_protocols_through_the_real_command(tmp_path, short_recording, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    done = run_cli(
        "replay",
        str(short_recording),
        "--protocol",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
