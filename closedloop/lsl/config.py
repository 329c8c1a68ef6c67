"""A private, loopback-only liblsl configuration for self-contained runs (demo, benchmarks).

liblsl reads ``LSLAPICFG`` once, when the library loads, so :func:`use_loopback_config` must run
before anything imports :mod:`pylsl`. A fresh ``SessionID`` keeps these streams invisible to (and
undisturbed by) other LSL programs on the same machine or network.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path


def write_loopback_config(folder: str | os.PathLike | None = None, session_id: str | None = None) -> Path:
    """Write an ``lsl_api.cfg`` that keeps all LSL traffic on this machine and return its path."""
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="closedloop-lsl-"))
    session_id = session_id or f"closedloop-{uuid.uuid4().hex}"
    path = folder / "lsl_api.cfg"
    path.write_text(
        "[ports]\nIPv6 = disable\n\n"
        "[multicast]\nResolveScope = machine\nKnownPeers = {127.0.0.1}\n\n"
        f"[lab]\nSessionID = {session_id}\n\n"
        "[log]\nlevel = -3\n"
    )
    return path


def use_loopback_config(force: bool = False) -> Path | None:
    """Export a loopback-only configuration through ``LSLAPICFG`` for this process and its children.

    Does nothing when ``LSLAPICFG`` is already set (tests set their own) unless ``force``.
    Returns the configuration in force, or None if pylsl was already loaded with another one.
    """
    if os.environ.get("LSLAPICFG") and not force:
        return Path(os.environ["LSLAPICFG"])
    if "pylsl" in sys.modules:
        return None
    path = write_loopback_config()
    os.environ["LSLAPICFG"] = str(path)
    return path
