"""Protocol files: the contract's keys, presets, validation messages, TOML round trips."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import mne
import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.channels import find_channel, normalize_name
from closedloop.errors import ProtocolError
from closedloop.estimators import available_methods
from closedloop.protocol import (
    MAX_PULSES_PER_TRIGGER,
    MIN_INTERVAL_FLOOR_S,
    MIN_PULSE_INTERVAL_S,
    ArtifactSettings,
    BandSettings,
    DisplaySettings,
    EstimatorSettings,
    FeedbackSettings,
    Protocol,
    SignalSettings,
    TriggerSettings,
    list_presets,
    load_protocol,
    parse_protocol,
    preset_text,
    protocol_to_toml,
)
from tests.helpers.recordings import EYES_CLOSED, PROJECT_ROOT

CONTRACTS = PROJECT_ROOT / ".." / "shared" / "CONTRACTS.md"
PRESETS_DIR = PROJECT_ROOT / "closedloop" / "presets"
PRESET_NAMES = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))

MINIMAL = """\
name = "test"
kind = "phase"

[signal]
channel = "C3"

[band]
low_hz = 8.0
high_hz = 13.0
"""


def write(tmp_path: Path, text: str, name: str = "proto.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def contract_example() -> str:
    """The protocol TOML block of ../shared/CONTRACTS.md, as written there."""
    text = CONTRACTS.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "no ```toml block in CONTRACTS.md"
    return blocks[0]


def as_written(value):
    return tuple(value) if isinstance(value, list) else value


# -- the contract --------------------------------------------------------------------------------


def test_contract_example_loads_exactly_as_written(tmp_path):
    text = contract_example()
    path = write(tmp_path, text)
    protocol = load_protocol(path)
    data = tomllib.loads(text)
    assert protocol.name == data["name"]
    assert protocol.kind == data["kind"]
    assert protocol.source == str(path)
    checked = 0
    for section, table in data.items():
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            got = getattr(getattr(protocol, section), key)
            assert got == as_written(value), f"[{section}] {key}: {got!r} != {value!r}"
            checked += 1
    assert checked >= 15  # every key of the example, not a few


def test_contract_example_parses_from_a_dict_too():
    data = tomllib.loads(contract_example())
    protocol = parse_protocol(data, "inline")
    assert protocol.source == "inline"
    assert protocol.trigger.gate_kind == data["trigger"]["amplitude_gate"].split(":")[0]


# -- presets -------------------------------------------------------------------------------------


def test_issue_presets_all_exist():
    wanted = {
        "mu-trough-c3",
        "alpha-trough-f5-dlpfc",
        "alpha-peak-o2",
        "alpha-trough-o2",
        "faa-neurofeedback",
        "so-upstate-clas",
        "random-phase-sham",
        "default",
    }
    assert wanted <= set(PRESET_NAMES)
    assert [name for name, _ in list_presets()] == PRESET_NAMES


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_loads_and_names_itself(name):
    protocol = load_protocol(name)
    assert protocol.name == name
    assert protocol.source == name
    assert protocol.description.strip()
    summary = dict(list_presets())[name]
    assert summary == protocol.description.strip().splitlines()[0]
    assert "\n" not in summary


@pytest.mark.parametrize("name", [n for n in PRESET_NAMES if n != "default"])
def test_preset_cites_its_source(name):
    text = preset_text(name)
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert re.search(r"Source", comments), f"{name}: no source in its comments"
    assert re.search(r"\(?(19|20)\d\d\)?", comments), f"{name}: the source has no year"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_text_is_the_file_and_loads_equal(name, tmp_path):
    text = preset_text(name)
    assert text == (PRESETS_DIR / f"{name}.toml").read_text(encoding="utf-8")
    from_file = load_protocol(write(tmp_path, text, f"{name}.toml"))
    assert dataclasses.replace(from_file, source=name) == load_protocol(name)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_round_trips_through_toml(name, tmp_path):
    protocol = load_protocol(name)
    again = load_protocol(write(tmp_path, protocol_to_toml(protocol)))
    assert dataclasses.replace(again, source=protocol.source) == protocol


def test_preset_names_are_case_insensitive():
    assert load_protocol("MU-Trough-C3") == load_protocol("mu-trough-c3")


@pytest.fixture(scope="module")
def eegmmidb_channels(recordings) -> list[str]:
    return mne.io.read_raw_edf(EYES_CLOSED, preload=False, verbose="error").ch_names


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_channels_exist_in_the_64_channel_recording(name, eegmmidb_channels):
    """The issue's "done when": the eegmmidb files carry every channel the presets name."""
    protocol = load_protocol(name)
    sig = protocol.signal
    wanted = [sig.channel, *sig.neighbors, *protocol.feedback.channels]
    if sig.reference == "bipolar":
        wanted.append(sig.bipolar_with)
    if sig.reference == "weights":
        wanted.extend(sig.weights)
    indices = [find_channel(ch, eegmmidb_channels) for ch in wanted]
    assert len(set(indices)) == len({normalize_name(ch) for ch in wanted})


def test_presets_follow_the_issue():
    mu = load_protocol("mu-trough-c3")
    assert (mu.signal.channel, mu.signal.reference) == ("C3", "hjorth")
    assert (mu.band.low_hz, mu.band.high_hz) == (8.0, 13.0)
    assert mu.trigger.target_phase_deg == 180.0
    assert mu.trigger.gate_kind != "none"
    assert mu.trigger.min_interval_s == 2.0

    f5 = load_protocol("alpha-trough-f5-dlpfc")
    assert (f5.signal.channel, f5.signal.reference) == ("F5", "hjorth")
    assert f5.band.individual and f5.trigger.target_phase_deg == 180.0

    peak, trough = load_protocol("alpha-peak-o2"), load_protocol("alpha-trough-o2")
    assert peak.signal.channel == trough.signal.channel == "O2"
    assert (peak.trigger.target_phase_deg, trough.trigger.target_phase_deg) == (0.0, 180.0)
    assert dataclasses.replace(trough.trigger, target_phase_deg=0.0) == peak.trigger

    faa = load_protocol("faa-neurofeedback")
    assert faa.kind == "feedback" and faa.feedback.measure == "asymmetry"
    assert faa.feedback.channels == ("F4", "F3")
    assert faa.band.individual and faa.feedback.zscore and faa.feedback.smoothing_s > 0
    assert faa.baseline_s > 0

    so = load_protocol("so-upstate-clas")
    assert so.signal.channel == "Fz" and (so.band.low_hz, so.band.high_hz) == (0.5, 2.0)
    assert so.trigger.target_phase_deg == 0.0 and so.trigger.pulses == 2
    assert so.trigger.min_interval_s > so.trigger.burst_duration_s

    default = load_protocol("default")
    assert default.kind == "phase" and default.signal.channel == "O2"
    assert (default.band.low_hz, default.band.high_hz) == (8.0, 13.0)
    assert default.trigger.target_phase_deg == 0.0
    assert default.trigger.amplitude_gate == "percentile:50"
    assert (default.trigger.min_interval_s, default.trigger.baseline_s) == (0.25, 10.0)


def test_sham_has_the_timing_of_its_verum():
    sham, verum = load_protocol("random-phase-sham"), load_protocol("mu-trough-c3")
    assert sham.trigger.event == "sham" and sham.trigger.random_phase
    assert verum.trigger.event == "stim" and not verum.trigger.random_phase
    assert (sham.signal, sham.band, sham.estimator, sham.artifact) == (
        verum.signal,
        verum.band,
        verum.estimator,
        verum.artifact,
    )
    same = dataclasses.replace(
        sham.trigger,
        event="stim",
        random_phase=False,
        target_phase_deg=verum.trigger.target_phase_deg,
        technical_delay_s=verum.trigger.technical_delay_s,
    )
    assert same == verum.trigger


# -- validation: every message names the file, the key, the value and what is accepted -------------


def edit(section: str, key: str, value: str, base: str = MINIMAL) -> str:
    """``base`` with ``key = value`` set in ``[section]`` (top level when section is "")."""
    if not section:
        return f"{key} = {value}\n" + base
    header = f"[{section}]\n"
    if header in base:
        return base.replace(header, f"{header}{key} = {value}\n")
    return base + f"\n{header}{key} = {value}\n"


BAD = [
    # (toml text, pattern the message must match)
    (edit("", "nmae", '"x"'), r'unknown key nmae \(did you mean "name"\?\)'),
    (
        MINIMAL + "\n[triger]\nmin_interval_s = 2.0\n",
        r'unknown key triger \(did you mean "trigger"\?\)',
    ),
    (
        edit("trigger", "min_interval", "2.0"),
        (
            r'unknown key \[trigger\] min_interval \(did you mean "min_interval_s"\?\)'
            r".*accepted here: .*min_interval_s"
        ),
    ),
    (
        edit("signal", "refrence", '"hjorth"'),
        r'unknown key \[signal\] refrence \(did you mean "reference"\?\)',
    ),
    (
        edit("trigger", "min_interval_s", '"2"'),
        r'\[trigger\] min_interval_s = "2" is not accepted: expected seconds >= 0\.1',
    ),
    (
        edit("trigger", "min_interval_s", "0.05"),
        r"\[trigger\] min_interval_s = 0\.05 is not accepted: .*MIN_INTERVAL_FLOOR_S",
    ),
    (edit("trigger", "min_interval_s", "nan"), r"\[trigger\] min_interval_s = nan is not accepted"),
    (
        edit("trigger", "max_triggers", "2.5"),
        r"\[trigger\] max_triggers = 2\.5 is not accepted: expected a whole number >= 0",
    ),
    (edit("trigger", "max_triggers", "-1"), r"\[trigger\] max_triggers = -1 is not accepted"),
    (
        edit("trigger", "target_phase_deg", "270.0"),
        (
            r"\[trigger\] target_phase_deg = 270\.0 is not accepted: "
            r"expected a phase in degrees.* in \[-180, 180\]"
        ),
    ),
    (
        edit("trigger", "phase_tolerance_deg", "0"),
        r"\[trigger\] phase_tolerance_deg = 0 is not accepted: .*\(0, 180\]",
    ),
    (
        edit("trigger", "amplitude_gate", '"percentile:150"'),
        (
            r'\[trigger\] amplitude_gate = "percentile:150" is not accepted: '
            r'expected "percentile:P" with P from 0 to 100'
        ),
    ),
    (edit("trigger", "amplitude_gate", '"uv:-3"'), r'amplitude_gate = "uv:-3" is not accepted'),
    (
        edit("trigger", "amplitude_gate", '"median"'),
        r'amplitude_gate = "median" is not accepted: .*"none"',
    ),
    (edit("trigger", "amplitude_gate", "50"), r"amplitude_gate = 50 is not accepted"),
    (
        edit("trigger", "pulses", str(MAX_PULSES_PER_TRIGGER + 1)),
        (
            rf"\[trigger\] pulses = {MAX_PULSES_PER_TRIGGER + 1} is not accepted: "
            r"expected a whole number from 1 to"
        ),
    ),
    (
        edit("trigger", "pulse_interval_s", "0.001"),
        r"\[trigger\] pulse_interval_s = 0\.001 is not accepted: .*MIN_PULSE_INTERVAL_S",
    ),
    (
        edit("trigger", "pulses", "3", edit("trigger", "pulse_interval_s", "1.0")),
        (
            r"\[trigger\] min_interval_s = 2\.0 is not accepted: "
            r"a burst of 3 pulses 1 s apart lasts 2 s"
        ),
    ),
    (
        edit("trigger", "technical_delay_s", "-0.01"),
        r"\[trigger\] technical_delay_s = -0\.01 is not accepted",
    ),
    (
        edit("trigger", "event", '""'),
        r'\[trigger\] event = "" is not accepted: expected a non-empty string',
    ),
    (
        edit("trigger", "random_phase", '"yes"'),
        r'\[trigger\] random_phase = "yes" is not accepted: expected true or false',
    ),
    (
        edit("trigger", "baseline_s", "0"),
        (
            r"\[trigger\] baseline_s = 0 is not accepted: "
            r'amplitude_gate = "percentile:50" require a baseline'
        ),
    ),
    (
        MINIMAL.replace("high_hz = 13.0", "high_hz = 7.0"),
        r"\[band\] high_hz = 7\.0 is not accepted: expected a frequency above low_hz = 8 Hz",
    ),
    (
        MINIMAL.replace("low_hz = 8.0", "low_hz = -1.0"),
        r"\[band\] low_hz = -1\.0 is not accepted: expected a frequency in Hz > 0",
    ),
    (MINIMAL.replace("low_hz = 8.0", "low_hz = true"), r"\[band\] low_hz = true is not accepted"),
    (
        edit("band", "peak_search_hz", "[14.0, 7.0]"),
        r"\[band\] peak_search_hz = \[14\.0, 7\.0\] is not accepted",
    ),
    (
        edit("band", "individual", "1"),
        r"\[band\] individual = 1 is not accepted: expected true or false",
    ),
    (
        edit("signal", "reference", '"hjort"'),
        r'\[signal\] reference = "hjort" is not accepted: .*did you mean "hjorth"',
    ),
    (
        edit("signal", "reference", '"bipolar"'),
        r"\[signal\] bipolar_with is missing: reference = \"bipolar\" needs",
    ),
    (edit("signal", "reference", '"weights"'), r"\[signal\] weights is missing"),
    (
        edit("signal", "neighbors", '"FC3"'),
        r'\[signal\] neighbors = "FC3" is not accepted: expected a list of channel names',
    ),
    (
        edit("signal", "neighbors", '["FC3", "C3"]'),
        r"\[signal\] neighbors = .* not the channel itself",
    ),
    (edit("signal", "neighbors", '["FC3", "fc3"]'), r"\[signal\] neighbors = .* each channel once"),
    (
        edit("signal", "notch_hz", "55"),
        r"\[signal\] notch_hz = 55 is not accepted: expected 0 \(off\), 50 or 60",
    ),
    (MINIMAL.replace('channel = "C3"', "channel = 3"), r"\[signal\] channel = 3 is not accepted"),
    (
        MINIMAL.replace('channel = "C3"', 'channel = "  "'),
        r'\[signal\] channel = "  " is not accepted',
    ),
    (MINIMAL.replace('channel = "C3"\n', ""), r"missing required key \[signal\] channel"),
    (MINIMAL.replace('name = "test"\n', ""), r"missing required key name"),
    (MINIMAL.replace('kind = "phase"\n', ""), r"missing required key kind"),
    (
        MINIMAL.replace('"phase"', '"phasee"'),
        r'kind = "phasee" is not accepted: .*did you mean "phase"',
    ),
    (MINIMAL.replace("low_hz = 8.0\n", ""), r"missing required key \[band\] low_hz"),
    (MINIMAL.replace('name = "test"', 'name = ""'), r'name = "" is not accepted'),
    (
        MINIMAL.replace('[signal]\nchannel = "C3"\n', 'signal = "C3"\n'),
        r"signal must be a \[signal\] section",
    ),
    (
        edit("trigger", "min_interval_s", "{ value = 2 }"),
        r"\[trigger\] min_interval_s must be a value, not a table",
    ),
    (
        edit("artifact", "max_abs_uv", "0"),
        r"\[artifact\] max_abs_uv = 0 is not accepted: expected microvolts > 0",
    ),
    (edit("artifact", "hold_s", "-1"), r"\[artifact\] hold_s = -1 is not accepted"),
    (
        edit("estimator", "method", '"hilbrt"'),
        r'\[estimator\] method = "hilbrt" is not accepted: expected one of',
    ),
    (
        edit("feedback", "measure", '"asymetry"'),
        r'\[feedback\] measure = "asymetry" is not accepted: .*did you mean "asymmetry"',
    ),
    (
        edit("feedback", "measure", '"asymmetry"', edit("feedback", "channels", '["F4"]')),
        (
            r'\[feedback\] channels = \["F4"\] is not accepted: '
            r'measure = "asymmetry" needs exactly two channels'
        ),
    ),
    (edit("feedback", "window_s", "0"), r"\[feedback\] window_s = 0 is not accepted"),
    (
        edit("display", "direction", '"upward"'),
        r'\[display\] direction = "upward" is not accepted: expected one of "up" \| "down"',
    ),
    (
        edit("display", "range", "[2.0, -2.0]"),
        r"\[display\] range = \[2\.0, -2\.0\] is not accepted: expected two feedback values "
        r"\[low, high\] with low < high",
    ),
    (edit("display", "range", "[1.0]"), r"\[display\] range = \[1\.0\] is not accepted"),
    (edit("display", "range", '"wide"'), r'\[display\] range = "wide" is not accepted'),
    (
        edit("display", "smoothing_s", "-0.5"),
        r"\[display\] smoothing_s = -0\.5 is not accepted: expected seconds \(0 = no smoothing\) in \[0, 10\]",
    ),
    (
        edit("display", "shape", '"square"'),
        r'\[display\] shape = "square" is not accepted: expected one of "bar" \| "circle"',
    ),
    (
        edit("display", "color", '"green"'),
        r'\[display\] color = "green" is not accepted: expected a colour as "#rrggbb"',
    ),
    (edit("display", "color_low", '"#12345"'), r'\[display\] color_low = "#12345" is not accepted'),
    (
        edit("display", "tone", '"on"'),
        r'\[display\] tone = "on" is not accepted: expected true or false',
    ),
    (
        edit("display", "tone_maps", '"pich"'),
        r'\[display\] tone_maps = "pich" is not accepted: .*did you mean "pitch"',
    ),
    (
        edit("display", "pitch_hz", "[20.0, 880.0]"),
        r"\[display\] pitch_hz = \[20\.0, 880\.0\] is not accepted: expected two frequencies in Hz "
        r"\[low, high\] with low < high, each in \[50, 4000\]",
    ),
    (
        edit("display", "loudness", "[0.1, 1.5]"),
        r"\[display\] loudness = \[0\.1, 1\.5\] is not accepted: .*each in \[0, 1\]",
    ),
    (
        edit("display", "colour", '"#ffffff"'),
        r'unknown key \[display\] colour \(did you mean "color"\?\)',
    ),
    (MINIMAL + "[trigger\nmin_interval_s = 2\n", r"not valid TOML: .*line"),
]


@pytest.mark.parametrize(("text", "pattern"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_invalid_file_names_file_key_value_and_accepted(text, pattern, tmp_path):
    path = write(tmp_path, text)
    with pytest.raises(ProtocolError, match=pattern) as info:
        load_protocol(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert info.value.exit_code == 2
    assert message.count("\n") == 0 and len(message) < 400


def test_unknown_method_lists_the_estimators(tmp_path):
    path = write(tmp_path, edit("estimator", "method", '"nope"'))
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    for method in available_methods():
        assert f'"{method}"' in str(info.value)


@pytest.mark.parametrize("method", list(available_methods()))
def test_every_estimator_name_is_accepted(method, tmp_path):
    path = write(tmp_path, edit("estimator", "method", f'"{method.upper()}"'))
    assert load_protocol(path).estimator.method == method


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ProtocolError, match=r"protocol file .*nothing\.toml' does not exist"):
        load_protocol(tmp_path / "nothing.toml")
    with pytest.raises(
        ProtocolError,
        match=r'"mu-trough" is neither a protocol file nor a preset '
        r'\(did you mean "mu-trough-c3"\?\)\. Presets: ',
    ):
        load_protocol("mu-trough")
    with pytest.raises(ProtocolError, match="Presets: " + ", ".join(PRESET_NAMES)):
        preset_text("zzz")


def test_not_utf8_is_a_protocol_error(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(MINIMAL.replace("test", "t\xe9st").encode("latin-1"))
    with pytest.raises(ProtocolError, match="cannot be read"):
        load_protocol(path)


# -- accepted forms and normalisation --------------------------------------------------------------


def test_defaults_and_normalisation(tmp_path):
    text = edit(
        "trigger", "target_phase_deg", "-180", edit("trigger", "amplitude_gate", '" UV : 25 "')
    )
    text = text.replace('channel = "C3"', 'channel = "C3"\nreference = "Hjorth"')
    p = load_protocol(write(tmp_path, text))
    assert p.trigger.target_phase_deg == 180.0
    assert p.trigger.amplitude_gate == "uv:25"
    assert (p.trigger.gate_kind, p.trigger.gate_value) == ("uv", 25.0)
    assert p.signal.reference == "hjorth"
    assert p.estimator == EstimatorSettings()
    assert p.artifact == ArtifactSettings()
    assert p.trigger == TriggerSettings(target_phase_deg=180.0, amplitude_gate="uv:25")


@pytest.mark.parametrize(
    ("gate", "kind", "value"),
    [
        ("percentile:50", "percentile", 50.0),
        ("percentile:0", "percentile", 0.0),
        ("uv:12.5", "uv", 12.5),
        ("none", "none", 0.0),
        ("NONE", "none", 0.0),
    ],
)
def test_gate_parsing(gate, kind, value):
    trig = TriggerSettings(amplitude_gate=gate)
    assert (trig.gate_kind, trig.gate_value) == (kind, value)


def test_feedback_band_is_optional_but_never_half_given(tmp_path):
    text = 'name = "fb"\nkind = "feedback"\n[signal]\nchannel = "Pz"\n[band]\nlow_hz = 4.0\n'
    with pytest.raises(ProtocolError, match=r"missing required key \[band\] high_hz"):
        load_protocol(write(tmp_path, text))


def test_a_directory_is_not_a_protocol(tmp_path):
    with pytest.raises(ProtocolError, match="is not a file"):
        load_protocol(tmp_path)


def test_feedback_protocol_needs_no_band_and_defaults_to_alpha(tmp_path):
    text = (
        'name = "fb"\nkind = "feedback"\n[signal]\nchannel = "Pz"\n[feedback]\nmeasure = "ratio"\n'
    )
    p = load_protocol(write(tmp_path, text))
    assert p.kind == "feedback" and p.feedback.measure == "ratio"
    assert (p.band.low_hz, p.band.high_hz) == (8.0, 13.0)


def test_weights_reference_round_trips_odd_channel_names(tmp_path):
    text = MINIMAL.replace('channel = "C3"', 'channel = "EEG O2"\nreference = "weights"')
    text += '\n[signal.weights]\n"EEG O2" = 1.0\n"Fc5." = -0.5\nPz = -0.5\n'
    p = load_protocol(write(tmp_path, text))
    assert p.signal.weights == {"EEG O2": 1.0, "Fc5.": -0.5, "Pz": -0.5}
    again = load_protocol(write(tmp_path, protocol_to_toml(p), "again.toml"))
    assert again.signal == p.signal


def test_estimator_params_round_trip(tmp_path):
    text = (
        edit("estimator", "method", '"ar"') + "\n[estimator.params]\norder = 30\nwindow_s = 0.5\n"
    )
    p = load_protocol(write(tmp_path, text))
    assert p.estimator.params == {"order": 30, "window_s": 0.5}
    assert "[estimator.params]" in protocol_to_toml(p)
    again = load_protocol(write(tmp_path, protocol_to_toml(p), "again.toml"))
    assert again.estimator == p.estimator


def test_sections_are_frozen_and_validate_when_built_directly():
    trig = TriggerSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        trig.min_interval_s = 0.0  # type: ignore[misc]
    with pytest.raises(ProtocolError, match=r"min_interval_s = 0\.01 is not accepted"):
        TriggerSettings(min_interval_s=0.01)
    with pytest.raises(ProtocolError, match=r"high_hz = 5\.0 is not accepted"):
        BandSettings(low_hz=8.0, high_hz=5.0)
    with pytest.raises(ProtocolError, match=r"baseline_s = 0 is not accepted"):
        Protocol(
            name="x",
            kind="feedback",
            signal=SignalSettings("Pz"),
            band=BandSettings(8.0, 12.0),
            trigger=TriggerSettings(baseline_s=0.0),
        )


def test_burst_floor_boundary():
    """A burst may be followed by the next after MIN_INTERVAL_FLOOR_S, not sooner."""
    trig = TriggerSettings(
        pulses=3, pulse_interval_s=0.01, min_interval_s=0.02 + MIN_INTERVAL_FLOOR_S
    )
    assert math.isclose(trig.burst_duration_s, 0.02)
    with pytest.raises(ProtocolError, match="a burst of 3 pulses"):
        TriggerSettings(pulses=3, pulse_interval_s=0.05, min_interval_s=0.15)


# -- property: any valid protocol survives protocol_to_toml -> load unchanged -------------

CHANNELS = ["C3", "C4", "Cz", "FC1", "FC5", "CP1", "CP5", "F3", "F4", "F5", "Fz", "O1", "O2", "Pz"]
finite = {"allow_nan": False, "allow_infinity": False}


@st.composite
def trigger_settings(draw) -> TriggerSettings:
    """A random valid [trigger] section."""
    pulses = draw(st.integers(1, MAX_PULSES_PER_TRIGGER))
    spacing = draw(st.floats(MIN_PULSE_INTERVAL_S, 0.5, **finite))
    shortest = (pulses - 1) * spacing + MIN_INTERVAL_FLOOR_S if pulses > 1 else MIN_INTERVAL_FLOOR_S
    gate = draw(
        st.one_of(
            st.just("none"),
            st.floats(0, 100, **finite).map(lambda p: f"percentile:{p:g}"),
            st.floats(0.01, 500, **finite).map(lambda u: f"uv:{u:g}"),
        )
    )
    return TriggerSettings(
        target_phase_deg=draw(st.floats(-180, 180, **finite)),
        phase_tolerance_deg=draw(st.floats(0.5, 180, **finite)),
        min_interval_s=draw(st.floats(shortest + 1e-9, shortest + 5.0, **finite)),
        min_interval_jitter_s=draw(st.one_of(st.just(0.0), st.floats(0, 3, **finite))),
        amplitude_gate=gate,
        baseline_s=draw(st.floats(0.5, 120, **finite)),
        max_triggers=draw(st.integers(0, 50)),
        technical_delay_s=draw(st.floats(0, 0.2, **finite)),
        event=draw(st.sampled_from(["stim", "sham", "click"])),
        random_phase=draw(st.booleans()),
        pulses=pulses,
        pulse_interval_s=spacing,
    )


@st.composite
def protocols(draw) -> Protocol:
    channel = draw(st.sampled_from(CHANNELS))
    others = [c for c in CHANNELS if c != channel]
    reference = draw(st.sampled_from(["none", "average", "hjorth", "bipolar", "weights"]))
    signal = SignalSettings(
        channel=channel,
        reference=reference,
        neighbors=tuple(draw(st.lists(st.sampled_from(others), max_size=4, unique=True)))
        if reference == "hjorth"
        else (),
        bipolar_with=draw(st.sampled_from(others)) if reference == "bipolar" else None,
        weights={channel: 1.0, draw(st.sampled_from(others)): draw(st.floats(-2, 2, **finite))}
        if reference == "weights"
        else {},
        notch_hz=draw(st.sampled_from([0.0, 50.0, 60.0])),
    )
    low = draw(st.floats(0.1, 40, **finite))
    band = BandSettings(
        low_hz=low, high_hz=low + draw(st.floats(0.5, 40, **finite)), individual=draw(st.booleans())
    )
    kind = draw(st.sampled_from(["phase", "feedback"]))
    measure = draw(st.sampled_from(["power", "ratio", "asymmetry"]))
    feedback = FeedbackSettings(
        measure=measure,
        channels=tuple(
            draw(st.lists(st.sampled_from(CHANNELS), min_size=2, max_size=2, unique=True))
        )
        if measure == "asymmetry"
        else (),
        window_s=draw(st.floats(0.1, 5, **finite)),
        smoothing_s=draw(st.floats(0, 5, **finite)),
        zscore=draw(st.booleans()),
    )
    return Protocol(
        name=draw(st.text(min_size=1, max_size=30).filter(str.strip)).strip(),
        kind=kind,
        signal=signal,
        band=band,
        estimator=EstimatorSettings(method=draw(st.sampled_from(list(available_methods())))),
        trigger=draw(trigger_settings()),
        artifact=ArtifactSettings(
            max_abs_uv=draw(st.floats(1, 1000, **finite)), hold_s=draw(st.floats(0, 5, **finite))
        ),
        feedback=feedback,
        description=draw(st.text(max_size=60)),
        source="generated",
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocols())
def test_any_valid_protocol_round_trips(protocol):
    text = protocol_to_toml(protocol)
    again = parse_protocol(tomllib.loads(text), "generated")
    assert again == protocol


# -- [display]: the participant's page ------------------------------------------------------------


def test_display_defaults_and_faa_preset_display(tmp_path):
    default = load_protocol(write(tmp_path, MINIMAL)).display
    assert default == DisplaySettings()
    assert (default.direction, default.range, default.shape, default.tone) == ("up", (-2.0, 2.0), "bar", False)
    faa = load_protocol("faa-neurofeedback").display
    assert faa.tone and faa.tone_maps == "pitch" and faa.pitch_hz == (220.0, 660.0)
    assert faa.color_low == "#4169e1" and faa.color == "#3cb371"


def test_display_section_round_trips_and_normalises(tmp_path):
    text = MINIMAL + (
        '\n[display]\ndirection = "DOWN"\nrange = [-1, 3]\nshape = "circle"\ncolor = "#AABBCC"\n'
        'tone = true\ntone_maps = "loudness"\nloudness = [0, 0.8]\nsmoothing_s = 0\n'
    )
    p = load_protocol(write(tmp_path, text))
    d = p.display
    assert (d.direction, d.range, d.shape, d.color, d.tone_maps, d.loudness, d.smoothing_s) == (
        "down", (-1.0, 3.0), "circle", "#aabbcc", "loudness", (0.0, 0.8), 0.0)
    assert d.color_low is None and "color_low" not in protocol_to_toml(p)
    again = load_protocol(write(tmp_path, protocol_to_toml(p), "again.toml"))
    assert again.display == d


def test_display_settings_validate_when_built_directly():
    with pytest.raises(ProtocolError, match=r"range = \[0\.0, 0\.0\] is not accepted"):
        DisplaySettings(range=(0.0, 0.0))
    with pytest.raises(ProtocolError, match=r"pitch_hz = \[880\.0, 220\.0\] is not accepted"):
        DisplaySettings(pitch_hz=(880.0, 220.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        DisplaySettings().tone = True  # type: ignore[misc]
