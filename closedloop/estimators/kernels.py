"""The one importer of the compiled kernels (``closedloop._phase``).

Wrappers here allocate nothing per call except where noted; callers pass C-contiguous
float64 arrays of the right sizes (the estimator classes own and check them).
"""

from __future__ import annotations

from closedloop._phase import PAD as WIENER_PAD  # noqa: F401
from closedloop._phase import (  # noqa: F401
    ar_extend,
    autocorr,
    burg,
    complex_fir,
    fir_valid,
    first_crossing,
    horizon_predict,
    levinson,
    WienerKernel,
    wiener_run,
)
