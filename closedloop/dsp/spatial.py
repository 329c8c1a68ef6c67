"""Spatial filters: channel + reference -> derived signal, as a weight matrix."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from closedloop._dsp_spatial import mark_bad, weighted_rows
from closedloop.channels import find_channel, find_channels, normalize_name
from closedloop.dsp._checks import SettingsError, check_chunk
from closedloop.errors import DataError

REFERENCES = ("none", "average", "hjorth", "bipolar", "weights")
N_DEFAULT_NEIGHBORS = 4
# Up to this many multiply-adds per sample the direct loop beats BLAS plus its call overhead.
_DIRECT_MAX_MACS = 256

# Channels that are not scalp EEG by name; left out of the common average.
_NON_EEG = re.compile(
    r"^(ECG|EKG|EOG|EMG|EXG|BIP|STI|STATUS|TRIG|RESP|GSR|ACC|AUX|PHOTO)", re.IGNORECASE
)


def is_eeg_name(name: str) -> bool:
    """False for channel names that announce another modality ("ECG ECG", "EOG", "BIP3")."""
    return not _NON_EEG.match(str(name).strip())


@lru_cache(maxsize=1)
def _montage_positions() -> dict[str, np.ndarray]:
    """Electrode positions of MNE's standard 10-05 montage, keyed by normalized name."""
    import mne

    with warnings.catch_warnings():
        # MNE 1.13 renames "standard_1005" to "colin27_1005" (same positions).
        warnings.simplefilter("ignore", FutureWarning)
        try:
            montage = mne.channels.make_standard_montage("colin27_1005")
        except ValueError:
            montage = mne.channels.make_standard_montage("standard_1005")
    positions = montage.get_positions()["ch_pos"]
    return {normalize_name(name): np.asarray(xyz) for name, xyz in positions.items()}


def default_neighbors(
    target: str, ch_names: Sequence[str], bad: Sequence[str] = (), n: int = N_DEFAULT_NEIGHBORS
) -> list[str]:
    """The ``n`` channels of ``ch_names`` nearest to ``target`` in the standard 10-05 layout.

    Bad channels, the target itself and channels without a 10-05 position are skipped.

    Raises
    ------
    DataError
        When the target has no 10-05 position or fewer than ``n`` candidates remain.
    """
    positions = _montage_positions()
    index = find_channel(target, ch_names)
    key = normalize_name(ch_names[index])
    if key not in positions:
        raise DataError(
            f"channel {ch_names[index]!r} has no position in the standard 10-05 layout, so its"
            " Hjorth neighbours cannot be chosen; give the neighbours explicitly."
        )
    bad_idx = set(find_channels(list(bad), ch_names))
    candidates = []
    for i, name in enumerate(ch_names):
        other = normalize_name(name)
        if i == index or i in bad_idx or other not in positions or not is_eeg_name(name):
            continue
        candidates.append((float(np.linalg.norm(positions[other] - positions[key])), i))
    if len(candidates) < n:
        raise DataError(
            f"channel {ch_names[index]!r} needs {n} Hjorth neighbours with 10-05 positions;"
            f" only {len(candidates)} are present and good."
        )
    candidates.sort()
    return [ch_names[i] for _, i in candidates[:n]]


def spatial_weights(
    ch_names: list[str],
    targets: list[str],
    reference: str,
    *,
    neighbors: list[str] | None = None,
    bipolar_with: str | None = None,
    weights: dict[str, float] | None = None,
    bad: list[str] | None = None,
) -> np.ndarray:
    """Weight matrix that turns the recorded channels into derived signals.

    Parameters
    ----------
    ch_names : list of str
        Channels of the data, in order (any vendor spelling: "EEG O2", "C3..", "Fc5.").
    targets : list of str
        The channels to derive, one output row each.
    reference : {"none", "average", "hjorth", "bipolar", "weights"}
        "none": the target as recorded. "average": the target minus the mean of all good EEG
        channels (bad channels and names such as "ECG ...", "EOG", "BIP3" excluded).
        "hjorth": the target minus the mean of its neighbours (``neighbors``, or by default the
        4 nearest good channels in MNE's standard 10-05 montage). "bipolar": the target minus
        ``bipolar_with``. "weights": exactly the given ``{channel: weight}`` (one target, which
        only names the row).
    neighbors, bipolar_with, weights, bad : optional
        As above; ``bad`` channels never enter an average or a default neighbourhood.

    Returns
    -------
    ndarray, shape (len(targets), len(ch_names))

    Raises
    ------
    DataError
        A named channel is not in ``ch_names`` (the message lists the nearest names), or a
        target is marked bad.
    SettingsError
        An unknown reference or a missing/contradictory option.
    """
    ch_names = [str(name) for name in ch_names]
    if not ch_names:
        raise SettingsError("ch_names is empty; the data must have at least one channel.")
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise SettingsError("targets is empty; name at least one channel to derive.")
    if reference not in REFERENCES:
        raise SettingsError(f"reference must be one of {', '.join(REFERENCES)}; got {reference!r}.")
    bad = list(bad or [])
    bad_idx = set(find_channels(bad, ch_names))
    target_idx = find_channels(list(targets), ch_names)
    for name, i in zip(targets, target_idx):
        if i in bad_idx:
            raise DataError(f"channel {name!r} is marked bad, so it cannot be a target.")
    n_ch = len(ch_names)
    matrix = np.zeros((len(targets), n_ch), dtype=np.float64)

    if reference == "weights":
        if not weights:
            raise SettingsError('reference "weights" needs weights={channel: weight, ...}.')
        if len(targets) != 1:
            raise SettingsError(
                f'reference "weights" gives one derived signal; got {len(targets)} targets.'
            )
        for name, value in weights.items():
            w = float(value)
            if not np.isfinite(w):
                raise SettingsError(f"weight of {name!r} must be finite; got {value!r}.")
            i = find_channel(name, ch_names)
            if i in bad_idx and w != 0:
                raise DataError(f"channel {name!r} is marked bad but has weight {w:g}.")
            matrix[0, i] += w
        return matrix

    for row, t in enumerate(target_idx):
        matrix[row, t] = 1.0
    if reference == "none":
        return matrix
    if reference == "average":
        good = [i for i in range(n_ch) if i not in bad_idx and is_eeg_name(ch_names[i])]
        if len(good) < 2:
            raise DataError(
                f"a common average needs at least 2 good EEG channels; found {len(good)}."
            )
        for row in range(len(targets)):
            matrix[row, good] -= 1.0 / len(good)
        return matrix
    if reference == "bipolar":
        if not bipolar_with:
            raise SettingsError('reference "bipolar" needs bipolar_with (the channel to subtract).')
        other = find_channel(bipolar_with, ch_names)
        if other in bad_idx:
            raise DataError(f"bipolar_with channel {bipolar_with!r} is marked bad.")
        for row, t in enumerate(target_idx):
            if other == t:
                raise SettingsError(
                    f"bipolar_with ({bipolar_with!r}) is the target itself; name another channel."
                )
            matrix[row, other] -= 1.0
        return matrix
    # hjorth
    if neighbors is not None and len(targets) != 1:
        raise SettingsError(
            f"explicit Hjorth neighbours apply to one target; got {len(targets)} targets."
        )
    for row, (name, t) in enumerate(zip(targets, target_idx)):
        if neighbors is not None:
            if len(neighbors) == 0:
                raise SettingsError("neighbors is empty; name at least one Hjorth neighbour.")
            idx = find_channels(list(neighbors), ch_names)
            if t in idx:
                raise SettingsError(f"the Hjorth neighbours of {name!r} include the target.")
            if len(set(idx)) != len(idx):
                raise SettingsError(f"the Hjorth neighbours {list(neighbors)} repeat a channel.")
            for i, neighbor in zip(idx, neighbors):
                if i in bad_idx:
                    raise DataError(f"Hjorth neighbour {neighbor!r} is marked bad.")
        else:
            idx = find_channels(default_neighbors(name, ch_names, bad), ch_names)
        matrix[row, idx] -= 1.0 / len(idx)
    return matrix


class SpatialFilter:
    """Apply a weight matrix to every sample: ``derived = weights @ chunk``.

    Only the channels with a non-zero weight are read, so NaN in an unused channel never
    reaches the output.

    Parameters
    ----------
    weights : array, shape (n_out, n_channels)
        From :func:`spatial_weights` or any finite matrix.

    Attributes
    ----------
    last_bad : int
        Non-finite output values in the last chunk (they are NaN).
    """

    def __init__(self, weights: np.ndarray) -> None:
        try:
            matrix = np.array(weights, dtype=np.float64, order="C", copy=True)
        except (TypeError, ValueError):
            raise SettingsError("weights must be a numeric (n_out, n_channels) array.") from None
        if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
            raise SettingsError(f"weights must have shape (n_out, n_channels); got {matrix.shape}.")
        if not np.isfinite(matrix).all():
            raise SettingsError("weights contain NaN or Inf.")
        self.weights = matrix
        self.n_channels = matrix.shape[1]
        self.n_out = matrix.shape[0]
        self.used = np.flatnonzero(np.any(matrix != 0, axis=0)).astype(np.intp)
        self._all_used = len(self.used) == self.n_channels
        self._weights_used = np.ascontiguousarray(matrix[:, self.used])
        self._direct = self._weights_used.size <= _DIRECT_MAX_MACS
        self.last_bad = 0
        self.n_bad = 0

    def reset(self) -> None:
        """The filter has no state; only the bad-value counters restart."""
        self.last_bad = 0
        self.n_bad = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Derived signals (n_out, n_samples) from ``chunk`` (n_channels, n_samples)."""
        chunk = check_chunk(chunk, self.n_channels, "SpatialFilter.process")
        if self._direct:
            out = np.empty((self.n_out, chunk.shape[1]), dtype=np.float64)
            bad = weighted_rows(self._weights_used, self.used, chunk, out)
        else:
            if self._all_used:
                out = self.weights @ chunk
            else:
                out = self._weights_used @ chunk[self.used]
            bad = mark_bad(out)
        self.last_bad = bad
        self.n_bad += bad
        return out
