"""``replay`` output does not change under refactoring: byte-identical ``events.tsv`` for every
preset on every shared recording (tests/helpers/golden.py says how the reference was taken)."""

from __future__ import annotations

import pytest

from tests.helpers.golden import GOLDEN_DIR, case_name, cases, replay_case, state_digest


@pytest.mark.parametrize(("rec", "preset", "chunk"), cases(), ids=[case_name(*c) for c in cases()])
def test_replay_is_byte_identical_to_reference(recordings, tmp_path, rec, preset, chunk):
    name = case_name(rec, preset, chunk)
    code, events, err = replay_case(rec, preset, chunk, tmp_path)
    refused = GOLDEN_DIR / f"{name}.exit"
    if refused.exists():
        assert code == int(refused.read_text()), err
        return
    assert code == 0, err
    assert events == (GOLDEN_DIR / f"{name}.tsv").read_bytes()
    assert state_digest(tmp_path) == (GOLDEN_DIR / f"{name}.state").read_text().strip()
