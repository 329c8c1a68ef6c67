"""protocol.with_overrides: dotted keys replaced, validated as a protocol file is."""

from __future__ import annotations

import dataclasses

import pytest

from closedloop.errors import ProtocolError
from closedloop.protocol import load_protocol, protocol_to_toml, with_overrides


@pytest.fixture(scope="module")
def mu():
    return load_protocol("mu-trough-c3")


def test_overrides_give_the_protocol_a_file_with_those_values_gives(mu, tmp_path):
    changed = with_overrides(
        mu,
        {
            "estimator.method": "AR",
            "trigger.target_phase_deg": -180,
            "band.low_hz": 9,
            "estimator.params.order": 5,
            "signal.weights.C3": 1.0,
            "name": "tuned",
        },
    )
    text = protocol_to_toml(mu)
    text = text.replace('method = "auto"', 'method = "ar"')
    text = text.replace("target_phase_deg = 180.0", "target_phase_deg = -180")
    text = text.replace("low_hz = 8.0", "low_hz = 9")
    text = text.replace('name = "mu-trough-c3"', 'name = "tuned"')
    text += "\n[estimator.params]\norder = 5\n\n[signal.weights]\nC3 = 1.0\n"
    path = tmp_path / "tuned.toml"
    path.write_text(text)
    from_file = load_protocol(path)
    assert changed == dataclasses.replace(from_file, source=mu.source)
    assert changed.estimator.method == "ar" and changed.trigger.target_phase_deg == 180.0
    assert changed.source == mu.source
    assert mu.estimator.method == "auto"  # the original is untouched


def test_no_override_is_the_same_protocol(mu):
    assert with_overrides(mu, {}) == mu


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"estimator.metod": "ar"}, r'estimator\.metod: unknown key \[estimator\] metod \(did you mean "method"\?\)'),
        ({"trig.min_interval_s": 3}, r'trig\.min_interval_s: unknown key trig \(did you mean "trigger"\?\)'),
        ({"trigger": 3}, r"trigger is a section, not a key; .*target_phase_deg"),
        ({"name.x": 3}, r"name\.x is not a protocol key: name is a top-level value"),
        ({"trigger.min_interval_s.x": 3}, r"only estimator\.params\.NAME, signal\.weights\.NAME"),
        ({"band..low_hz": 3}, r"not a dotted protocol key"),
        ({"trigger.target_phase_deg": 400}, r"target_phase_deg = 400 is not accepted: .*\[-180, 180\]"),
        ({"estimator.method": "arr"}, r'method = "arr" is not accepted: .*did you mean "ar"'),
        ({"band.low_hz": 14}, r"high_hz = 13\.0 is not accepted: expected a frequency above low_hz = 14 Hz"),
        ({"trigger.amplitude_gate": "median"}, r'amplitude_gate = "median" is not accepted'),
        ({"signal.weights.C3": "x"}, r'weights\.C3 = "x" is not accepted: expected a finite weight'),
    ],
)
def test_bad_overrides_name_the_key_and_what_is_accepted(mu, overrides, message):
    with pytest.raises(ProtocolError, match=message):
        with_overrides(mu, overrides)
