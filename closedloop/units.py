"""Voltage units as amplifiers, LSL apps and file formats spell them, and their factor to microvolts.

The engine works in microvolts. Every source declares its units somewhere: an LSL stream in each
channel's ``<unit>`` element, an XDF file in the same element of its stream header, an MNE file
in FIFF unit codes (MNE hands data over in volts). The spellings seen in the field:

- words and symbols: ``V``, ``volt(s)``, ``mV``, ``millivolt(s)``, ``µV`` (micro sign U+00B5),
  ``μV`` (Greek mu U+03BC), ``uV``, ``microvolt(s)``, ``nV``, ``nanovolt(s)``, in any case, with or
  without spaces or hyphens;
- mne-lsl's numeric codes: ``StreamInfo.set_channel_units`` writes the FIFF unit *multiplier* of
  each channel as an integer string, the power of ten of the channel's SI unit (volts for EEG):
  ``"0"`` (``FIFF_UNITM_NONE``, plain volts: what ``PlayerLSL`` sends), ``"-3"`` millivolts,
  ``"-6"`` microvolts, ``"-9"`` nanovolts (mne-lsl ``utils/meas_info.py``, MNE
  ``_fiff/constants.py``); mne-lsl reads them back the same way;
- MNE's FIFF unit code of the volt, ``107`` (``FIFF_UNIT_V``), as some exporters write it.

A numeric code is a power of ten of the *channel type's* SI unit, so it is read as a voltage only
on voltage channels (EEG, EOG, EMG, ECG, ...): mne-lsl writes ``"0"`` for a stim channel too.
"""

from __future__ import annotations

import math
import re

#: Channel types whose samples are voltages (LSL and XDF spellings, MNE's channel types).
VOLTAGE_TYPES = frozenset(
    {"eeg", "eog", "emg", "ecg", "ekg", "seeg", "ecog", "dbs", "bio", "exg", "ref", "gnd", "eeg_ref"}
)

#: Unit words -> factor to microvolts (keys are lower case, without spaces, hyphens or dots).
_WORDS = {
    "v": 1e6, "volt": 1e6, "volts": 1e6,
    "mv": 1e3, "millivolt": 1e3, "millivolts": 1e3,
    "uv": 1.0, "\u00b5v": 1.0, "\u03bcv": 1.0, "microvolt": 1.0, "microvolts": 1.0, "mcv": 1.0,
    "nv": 1e-3, "nanovolt": 1e-3, "nanovolts": 1e-3,
}
#: FIFF unit multipliers mne-lsl writes (power of ten of the SI unit) that a voltage can carry.
_MULTIPLIERS = {0: 1e6, -3: 1e3, -6: 1.0, -9: 1e-3, -12: 1e-6}
#: MNE's FIFF unit code of the volt.
FIFF_UNIT_V = 107
#: What ``--units`` accepts, for messages.
ACCEPTED = "V, mV, uV (or µV, microvolts), nV, or mne-lsl's codes 0, -3, -6, -9"
#: Canonical names of the factors, for messages ("the data look like ...").
NAMES = {1e6: "volts", 1e3: "millivolts", 1.0: "microvolts", 1e-3: "nanovolts"}
SYMBOLS = {1e6: "V", 1e3: "mV", 1.0: "uV", 1e-3: "nV"}

_STRIP = re.compile(r"[\s\-_.]+")
_INTEGER = re.compile(r"^[+-]?\d+$")


def is_voltage_type(ch_type: str | None) -> bool:
    """True for channel types that carry voltages (an empty type counts as EEG)."""
    return not ch_type or ch_type.strip().lower() in VOLTAGE_TYPES


def unit_to_uv(unit: str | None, ch_type: str | None = "eeg") -> float | None:
    """Factor that turns values in ``unit`` into microvolts, or None when ``unit`` is no voltage.

    Parameters
    ----------
    unit : str or None
        The unit as written (``"µV"``, ``"Volts"``, ``"0"``, ``"-6"``, ...).
    ch_type : str, optional
        The channel's type; numeric codes are read as voltages only on voltage channels.

    Returns
    -------
    float or None
        1e6 for volts, 1e3 for millivolts, 1 for microvolts, 1e-3 for nanovolts; None for an
        empty or unknown unit, or a numeric code on a non-voltage channel.
    """
    if unit is None:
        return None
    text = str(unit).strip()
    if not text:
        return None
    if _INTEGER.match(text):
        if not is_voltage_type(ch_type):
            return None
        code = int(text)
        if code == FIFF_UNIT_V:
            return 1e6
        return _MULTIPLIERS.get(code)
    return _WORDS.get(_STRIP.sub("", text).lower())


def parse_units_option(text: str) -> float:
    """The factor to microvolts of a ``--units`` value; ValueError naming what is accepted."""
    factor = unit_to_uv(text, "eeg")
    if factor is None:
        raise ValueError(f"--units {text!r} is not a voltage unit; accepted: {ACCEPTED}.")
    return factor


def factor_name(factor: float) -> str:
    """``volts``, ``millivolts``, ... for a factor to microvolts (its exponent otherwise)."""
    for value, name in NAMES.items():
        if math.isclose(factor, value, rel_tol=1e-9):
            return name
    return f"units of {factor:g} µV"


def factor_symbol(factor: float) -> str:
    """``V``, ``mV``, ``uV`` or ``nV`` for a factor to microvolts, as ``--units`` takes it."""
    for value, symbol in SYMBOLS.items():
        if math.isclose(factor, value, rel_tol=1e-9):
            return symbol
    return f"{factor:g}uV"
