"""Channel names across vendor spellings: "EEG O2", "O2..", "Fc5.", "c3-ref" all mean one electrode."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from closedloop.errors import DataError

_PREFIX = re.compile(r"^(EEG|EXG|ECG|EOG|EMG)[\s_\-:]+", re.IGNORECASE)
_SUFFIX = re.compile(r"[\s_\-]*(REF|AVG|LE|A1|A2|M1|M2|CZ)$", re.IGNORECASE)


def normalize_name(name: str) -> str:
    """Return the canonical, upper-case spelling of a channel name.

    Drops a modality prefix ("EEG O2"), a reference suffix ("C3-REF", "O1-A2"), padding dots
    ("O1..", "Fc5.") and white space. ``normalize_name("Fc5.") == "FC5"``.
    """
    text = str(name).strip()
    text = _PREFIX.sub("", text)
    text = text.replace(".", "").strip()
    if "-" in text or "_" in text:
        bare = _SUFFIX.sub("", text)
        if bare:
            text = bare
    return re.sub(r"\s+", "", text).upper()


def find_channel(wanted: str, available: Sequence[str]) -> int:
    """Index of ``wanted`` in ``available``, matched across vendor spellings.

    Raises
    ------
    DataError
        When no channel matches; the message names the channel and the nearest that exist.
    """
    key = normalize_name(wanted)
    normalized = [normalize_name(name) for name in available]
    matches = [i for i, name in enumerate(normalized) if name == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        exact = [i for i in matches if available[i] == wanted]
        if exact:
            return exact[0]
        names = ", ".join(repr(available[i]) for i in matches)
        raise DataError(f"channel {wanted!r} is ambiguous: it matches {names}; name one exactly.")
    close = difflib.get_close_matches(key, normalized, n=4, cutoff=0.5)
    hint = ", ".join(repr(available[normalized.index(c)]) for c in close)
    shown = ", ".join(repr(a) for a in list(available)[:12])
    more = f" ... ({len(available)} in all)" if len(available) > 12 else ""
    nearest = f" Nearest: {hint}." if hint else ""
    raise DataError(
        f"channel {wanted!r} is not in the data.{nearest} Channels present: {shown}{more}."
    )


def find_channels(wanted: Sequence[str], available: Sequence[str]) -> list[int]:
    """Indices of every name in ``wanted`` (see :func:`find_channel`)."""
    return [find_channel(name, available) for name in wanted]
