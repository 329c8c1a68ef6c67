"""LSL channel formats: their names and the numpy dtype a stream's samples are pulled into."""

from __future__ import annotations

import numpy as np
import pylsl

__all__ = ["FORMAT_NAMES", "NUMPY_DTYPES", "format_name"]

#: pylsl's channel format codes -> LSL format names.
FORMAT_NAMES = {
    pylsl.cf_undefined: "undefined",
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int8: "int8",
    pylsl.cf_int16: "int16",
    pylsl.cf_int32: "int32",
    pylsl.cf_int64: "int64",
}

#: Numeric channel formats -> the exact numpy dtype to pull into (a wrong one fills garbage).
NUMPY_DTYPES = {
    pylsl.cf_float32: np.float32,
    pylsl.cf_double64: np.float64,
    pylsl.cf_int8: np.int8,
    pylsl.cf_int16: np.int16,
    pylsl.cf_int32: np.int32,
    pylsl.cf_int64: np.int64,
}


def format_name(info_or_code) -> str:
    """The LSL name of a stream's channel format (a ``StreamInfo`` or a pylsl format code)."""
    code = info_or_code.channel_format() if hasattr(info_or_code, "channel_format") else int(info_or_code)
    return FORMAT_NAMES.get(code, str(code))
