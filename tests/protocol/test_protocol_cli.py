"""``closedloop protocols [NAME]``: listing, printing presets, checking files, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from closedloop.cli import main
from closedloop.protocol import list_presets, load_protocol, preset_text
from tests.helpers.recordings import PROJECT_ROOT
from tests.protocol.test_protocol import MINIMAL, PRESET_NAMES


def test_lists_every_preset_one_line_each(capsys):
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(PRESET_NAMES)
    for line, (name, summary) in zip(lines, list_presets()):
        assert line.split()[0] == name
        assert line.endswith(summary)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_prints_a_preset_as_commented_toml_that_loads(name, capsys, tmp_path):
    assert main(["protocols", name]) == 0
    out = capsys.readouterr().out
    assert out == preset_text(name)
    assert out.lstrip().startswith("#")
    path = tmp_path / f"{name}.toml"
    path.write_text(out, encoding="utf-8")
    assert load_protocol(path).name == name


def test_unknown_name_exits_2_with_the_list_and_a_suggestion(capsys):
    assert main(["protocols", "alpha-peak-02"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("closedloop protocols: error: ")
    assert 'did you mean "alpha-peak-o2"?' in err
    for name in PRESET_NAMES:
        assert name in err
    assert "Traceback" not in err and err.count("\n") == 0


def test_a_valid_file_is_printed_complete(capsys, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert main(["protocols", str(path)]) == 0
    out = capsys.readouterr().out
    for section in ("[signal]", "[band]", "[estimator]", "[trigger]", "[artifact]", "[feedback]"):
        assert section in out
    again = tmp_path / "again.toml"
    again.write_text(out, encoding="utf-8")
    assert load_protocol(again).trigger == load_protocol(path).trigger


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (("[band]\n", "[band]\nlow_hz_ = 1\n"), r"\[band\] low_hz_ \(did you mean \"low_hz\"\?\)"),
        (("high_hz = 13.0", 'high_hz = "13"'), r'\[band\] high_hz = "13" is not accepted'),
        (
            ("high_hz = 13.0", "high_hz = 13.0\n[trigger]\nmin_interval_s = 0.01"),
            r"\[trigger\] min_interval_s = 0\.01 is not accepted",
        ),
    ],
)
def test_an_invalid_file_exits_2_naming_file_and_key(edit, pattern, capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace(*edit), encoding="utf-8")
    assert main(["protocols", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert re.search(pattern, err), err


def test_entry_point_in_a_subprocess(tmp_path):
    """``python -m closedloop protocols``: the installed command's path, exit codes and streams."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}

    def protocols(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "closedloop", "protocols", name],
            capture_output=True,
            check=False,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    ok = protocols("so-upstate-clas")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == preset_text("so-upstate-clas")
    bad = protocols("nope.toml")
    assert bad.returncode == 2
    assert "nope.toml" in bad.stderr and "does not exist" in bad.stderr
    assert bad.stdout == ""
