"""``closedloop bench accuracy``: real engine replays of a real recording, per estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.groundtruth import circular_stats
from tests.helpers.protocols import phase_toml
from tests.helpers.recordings import EYES_CLOSED, PROJECT_ROOT, RECORDINGS

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


def test_bench_accuracy_puts_chunked_decisions_beside_per_sample_ones(
    recordings, protocol_file, tmp_path, capsys
):
    # issue 17: one table with per-sample and chunked decisions, and the trigger rate over time
    out_json = tmp_path / "chunks.json"
    rc = bench_accuracy(
        protocol_file,
        *("--targets", "0,180", "--methods", "wiener,ar", "--chunk-size", "1,4"),
        *("--json", str(out_json)),
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "chunk 1 (6.2 ms)" in table and "chunk 4 (25.0 ms)" in table
    assert "trigger rate over time" in table
    result = json.loads(out_json.read_text())
    assert result["chunk_sizes"] == [1, 4] and set(result["by_chunk"]) == {"1", "4"}
    assert result["methods"] == result["by_chunk"]["1"]["methods"]
    for chunk in ("1", "4"):
        for method, r in result["by_chunk"][chunk]["methods"].items():
            over_time = r["rate_over_time"]
            assert over_time["start_s"] == [30.0, 40.0, 50.0]
            # the bins hold every evaluated trigger (per minute per target, 10 s bins, the last
            # 19 s long with the end of the evaluation)
            end_s = result["eval_after_s"] + result["evaluated_s"]
            lengths = np.diff([*over_time["start_s"], end_s])
            counted = sum(p * s / 60.0 * 2 for p, s in zip(over_time["per_min"], lengths))
            assert counted == pytest.approx(r["n"], abs=0.5), (chunk, method)
            assert 0.0 < r["sd_se_deg"] < 5.0
    ours = {c: result["by_chunk"][c]["methods"]["wiener"] for c in ("1", "4")}
    ar = {c: result["by_chunk"][c]["methods"]["ar"] for c in ("1", "4")}
    # 25 ms chunks on strong alpha, predicted for the horizon asked: measured 16.9 (14.2 per
    # sample; 18.6 when the phase at the chunk's end was carried forward)
    assert ours["4"]["sd_deg"] <= 18.0 and abs(ours["4"]["mean_deg"]) <= 5.0
    for c in ("1", "4"):
        assert ours[c]["sd_deg"] < ar[c]["sd_deg"]
        assert ours[c]["per_min"] >= ar[c]["per_min"]


def test_bench_accuracy_compares_estimators_at_the_same_rate_on_weak_mu(recordings, tmp_path):
    # issue 17: on the weak mu rhythm (C3 with a Hjorth reference) the default's own median gate
    # lets more triggers through than ecHT's, so only a common rate compares them fairly
    out_json = tmp_path / "mu.json"
    rc = main(
        [
            "bench", "accuracy", str(RECORDINGS / "eegmmidb" / "S001R01.edf"),
            "--protocol", str(PROJECT_ROOT / "benchmarks" / "estimators_mu_c3.toml"),
            "--methods", "wiener,echt,ar", "--targets", "180", "--chunk-size", "1,2",
            "--gate", "rate:100", "--json", str(out_json),
        ]
    )
    assert rc == 0
    result = json.loads(out_json.read_text())
    assert result["amplitude_gate"] == "rate:100"
    for chunk in ("1", "2"):
        methods = result["by_chunk"][chunk]["methods"]
        rates = [m["per_min"] for m in methods.values()]
        assert max(rates) <= 1.15 * min(rates), rates  # the same rate, within 15 %
        # measured 25.3 against 36.5 (echt) and 49.3 (ar) per sample; 28.4, 37.0, 49.0 at 12.5 ms
        others = min(methods["echt"]["sd_deg"], methods["ar"]["sd_deg"])
        assert methods["wiener"]["sd_deg"] + 5.0 < others


def test_bench_accuracy_bad_chunk_sizes_and_gates(recordings, protocol_file, capsys):
    assert bench_accuracy(protocol_file, "--chunk-size", "1,0") == 2
    assert "--chunk-size must be whole numbers >= 1" in capsys.readouterr().err
    assert bench_accuracy(protocol_file, "--chunk-size", "1,x") == 2
    assert "is not a comma-separated list of ints" in capsys.readouterr().err
    assert bench_accuracy(protocol_file, "--gate", "rate:lots") == 2
    assert "--gate 'rate:lots'" in capsys.readouterr().err
