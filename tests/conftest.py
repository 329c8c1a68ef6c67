"""Shared test set-up.

LSL stays on this machine: a session-wide ``lsl_api.cfg`` (machine scope, loopback peer, IPv6
off, fresh SessionID, quiet log) is written and exported through ``LSLAPICFG`` here, before
anything imports pylsl, so that liblsl in this process and in every subprocess reads it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

_CFG_DIR = Path(tempfile.mkdtemp(prefix="closedloop-lsl-"))
_CFG = _CFG_DIR / "lsl_api.cfg"
_CFG.write_text(
    "[ports]\nIPv6 = disable\n\n"
    "[multicast]\nResolveScope = machine\nKnownPeers = {127.0.0.1}\n\n"
    f"[lab]\nSessionID = closedloop-test-{uuid.uuid4().hex}\n\n"
    "[log]\nlevel = -3\n"
)
os.environ["LSLAPICFG"] = str(_CFG)

import pytest  # noqa: E402

from tests.helpers.recordings import RECORDINGS, require_recordings  # noqa: E402


@pytest.fixture(scope="session")
def lsl_config() -> Path:
    """Path of the session's loopback-only lsl_api.cfg."""
    return _CFG


@pytest.fixture(scope="session")
def recordings() -> Path:
    """``../shared/recordings``; the test fails (never skips) when it is missing."""
    return require_recordings()


@pytest.fixture
def source_id() -> str:
    """A fresh, random LSL source_id for one test."""
    return f"closedloop-test-{uuid.uuid4().hex[:12]}"


__all__ = ["RECORDINGS"]


#: Fixtures that mean a test runs end to end (a live LSL stream, a sound server, a browser, a
#: cluster, a pseudo-terminal amplifier): such a test is marked ``e2e`` without saying so itself.
E2E_FIXTURES = frozenset(
    {"source_id", "null_sink", "browser", "dask_scheduler", "pty_pair", "live", "live_session", "view_only_ui"}
)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark end-to-end tests ``e2e``: those using an end-to-end fixture (above); whole modules
    say so themselves with ``pytestmark = pytest.mark.e2e``. ``pytest -m "not e2e"`` is then the
    quick unit part."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
