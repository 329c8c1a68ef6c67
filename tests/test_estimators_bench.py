"""``closedloop bench accuracy``: real engine replays of a real recording, per estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.groundtruth import circular_stats
from tests.helpers.protocols import phase_toml
from tests.helpers.recordings import EYES_CLOSED

PROTOCOL = phase_toml("alpha-o1-bench", "O1", reference="none", baseline_s=30.0)


@pytest.fixture
def protocol_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(PROTOCOL)
    return path


def bench_accuracy(protocol_file: Path, *options: str) -> int:
    """``closedloop bench accuracy`` of the eyes-closed recording under ``protocol_file``."""
    return main(["bench", "accuracy", str(EYES_CLOSED), "--protocol", str(protocol_file), *options])


def test_bench_accuracy_through_the_engine(recordings, protocol_file, tmp_path, capsys):
    out_json, figures = tmp_path / "acc.json", tmp_path / "fig"
    rc = bench_accuracy(
        protocol_file,
        "--targets",
        "0,180",
        "--methods",
        "wiener,ar",
        "--json",
        str(out_json),
        "--figures",
        str(figures),
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "wiener" in table and "ar " in table and "@   180°" in table
    result = json.loads(out_json.read_text())
    assert result["targets_deg"] == [0.0, 180.0] and result["eval_after_s"] == 30.0
    for method in ("wiener", "ar"):
        r = result["methods"][method]
        assert r["n"] == len(r["errors_deg"]) > 20
        assert r["n"] == sum(t["n"] for t in r["by_target"].values())
        again = circular_stats(np.array(r["errors_deg"]))
        assert again.sd_deg == pytest.approx(r["sd_deg"], abs=0.01)
        assert 0.0 <= r["within_45"] <= 1.0 and 0.5 < r["plv"] <= 1.0
        png = figures / f"accuracy_{method}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # both through the same engine and gate: ours is the more precise
    assert result["methods"]["wiener"]["sd_deg"] < result["methods"]["ar"]["sd_deg"]


def test_bench_accuracy_meets_the_targets_on_strong_alpha_per_sample(
    recordings, protocol_file, tmp_path, capsys
):
    out_json = tmp_path / "h.json"
    rc = bench_accuracy(
        protocol_file,
        "--targets",
        "0,180",
        "--methods",
        "wiener,ar,echt",
        "--json",
        str(out_json),
    )
    assert rc == 0
    methods = json.loads(out_json.read_text())["methods"]
    ours = methods["wiener"]
    assert ours["sd_deg"] <= 16.0 and abs(ours["mean_deg"]) <= 5.0
    assert ours["sd_deg"] < min(methods["ar"]["sd_deg"], methods["echt"]["sd_deg"])
    assert ours["per_min"] >= methods["ar"]["per_min"]


def test_bench_accuracy_bad_options(recordings, protocol_file, capsys):
    assert bench_accuracy(protocol_file, "--methods", "wiener,foo") == 2
    assert "'foo' is not an estimator; accepted: auto, ar" in capsys.readouterr().err
    assert bench_accuracy(protocol_file, "--targets", "0,peak") == 2
    assert "is not a comma-separated list of floats" in capsys.readouterr().err
    assert bench_accuracy(protocol_file, "--eval-after-s", "58") == 2
    assert "leaves too little" in capsys.readouterr().err
