"""Fixtures of the loop-back tests (test_loopback.py, test_loopback_cli.py)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def short_switch_interval():
    """A virtual amplifier's reader thread in the test process gets the interpreter back promptly,
    as in a process of its own (``bench virtual-amp`` runs with 0.1 ms)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(before)
