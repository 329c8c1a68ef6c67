"""The recordings of a sweep: files, folders searched recursively, BIDS roots (mne-bids)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.errors import DataError

#: BIDS entities written as columns (empty for recordings outside a BIDS tree without them).
ENTITY_COLUMNS = ("subject", "session", "task", "run")
#: Recording files looked for in folders (MNE's readers without ambiguous extensions, and XDF).
RECORDING_SUFFIXES = (
    ".edf",
    ".bdf",
    ".gdf",
    ".fif",
    ".fif.gz",
    ".vhdr",
    ".ahdr",
    ".set",
    ".cnt",
    ".cdt",
    ".nxe",
    ".lay",
    ".xdf",
    ".xdfz",
)
#: MNE file-name endings of FIF files that are not raw recordings.
_NOT_RAW_FIF = re.compile(
    r"[-_](epo|ave|cov|fwd|inv|trans|ica|sol|proj|bem|src|annot|tfr)\.fif(\.gz)?$", re.IGNORECASE
)
_SPLIT_FIF = re.compile(r"-\d+\.fif(\.gz)?$", re.IGNORECASE)
#: BIDS data files mne-bids is asked for.
_BIDS_EXTENSIONS = [".edf", ".bdf", ".vhdr", ".set", ".fif"]
_BIDS_DATATYPES = ["eeg", "ieeg"]


@dataclass(frozen=True)
class SweepRecording:
    """A recording to sweep: its absolute path, BIDS entities and identity on disk.

    ``size`` and ``mtime_ns`` are -1 when the path does not exist (its cells fail with that).
    """

    path: str
    entities: tuple[tuple[str, str], ...] = ()
    size: int = -1
    mtime_ns: int = -1

    @functools.cached_property
    def digest(self) -> str:
        """12 hex digits of the path, size and modification time."""
        text = json.dumps([self.path, self.size, self.mtime_ns])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_identity(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return -1, -1
    return int(st.st_size), int(st.st_mtime_ns)


def _entities_of(path: Path, bids_path=None) -> tuple[tuple[str, str], ...]:
    values: dict[str, Any] = {}
    if bids_path is not None:
        values = {key: getattr(bids_path, key, None) for key in ENTITY_COLUMNS}
    else:
        try:
            from mne_bids import get_entities_from_fname

            values = get_entities_from_fname(path.name, on_error="ignore")
        except Exception:  # noqa: BLE001 -- a name mne-bids cannot parse has no entities
            values = {}
    return tuple((key, str(values.get(key) or "")) for key in ENTITY_COLUMNS)


def _is_recording_file(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith(".") or not any(name.endswith(s) for s in RECORDING_SUFFIXES):
        return False
    if name.endswith((".fif", ".fif.gz")):
        if _NOT_RAW_FIF.search(name):
            return False
        if _SPLIT_FIF.search(name):  # a later part of a split FIF; MNE reads it from the first
            first = path.with_name(_SPLIT_FIF.sub(".fif", path.name))
            return not first.exists()
    return True


def _bids_recordings(root: Path) -> list[SweepRecording]:
    from mne_bids import find_matching_paths

    try:
        matches = find_matching_paths(
            root, datatypes=_BIDS_DATATYPES, suffixes=_BIDS_DATATYPES, extensions=_BIDS_EXTENSIONS
        )
    except Exception as exc:  # noqa: BLE001 -- mne-bids refusing a tree, said in a sentence
        raise DataError(
            f"could not search the BIDS root {str(root)!r} with mne-bids: {exc}."
        ) from None
    found = []
    for bids_path in sorted(matches, key=lambda b: str(b.fpath)):
        path = Path(bids_path.fpath)
        if "derivatives" in path.relative_to(root).parts[:-1] or not path.is_file():
            continue
        found.append(
            SweepRecording(str(path.resolve()), _entities_of(path, bids_path), *file_identity(path))
        )
    return found


def find_recordings(
    paths: Iterable[str | os.PathLike], *, exclude: Sequence[Path] = ()
) -> list[SweepRecording]:
    """The recordings that ``paths`` name, in a fixed order, each once.

    A file is taken as it is (one that cannot be read becomes a failed cell); a folder with a
    ``dataset_description.json`` is a BIDS root searched with mne-bids (EEG and iEEG data files);
    any other folder is searched recursively for :data:`RECORDING_SUFFIXES`, in sorted order,
    leaving out hidden entries and ``exclude`` (the sweep's own output folder).

    Raises
    ------
    DataError
        When a folder holds no recording, or nothing at all was found.
    """
    excluded = [Path(p).resolve() for p in exclude]
    found: list[SweepRecording] = []
    seen: set[str] = set()

    def add(rec: SweepRecording) -> None:
        if rec.path not in seen:
            seen.add(rec.path)
            found.append(rec)

    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            resolved = path.resolve()
            add(SweepRecording(str(resolved), _entities_of(resolved), *file_identity(resolved)))
            continue
        root = path.resolve()
        if (root / "dataset_description.json").is_file():
            in_folder = _bids_recordings(root)
            where = f"the BIDS root {str(path)!r} (EEG/iEEG data in {', '.join(_BIDS_EXTENSIONS)})"
        else:
            in_folder = []
            for dirpath, dirnames, filenames in os.walk(root):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d
                    for d in dirnames
                    if not d.startswith(".")
                    and not any((here / d).resolve() == x for x in excluded)
                )
                for name in sorted(filenames):
                    file = here / name
                    if _is_recording_file(file):
                        in_folder.append(
                            SweepRecording(str(file), _entities_of(file), *file_identity(file))
                        )
            where = f"the folder {str(path)!r} (looked for {', '.join(RECORDING_SUFFIXES)})"
        if not in_folder:
            raise DataError(f"no recording found in {where}.")
        for rec in in_folder:
            add(rec)
    if not found:
        raise DataError("no recording to sweep: give recording files, folders or BIDS roots.")
    return found


def stream_for(path: str, stream: str | None) -> str | None:
    """``stream`` applies to XDF files only."""
    if stream is None:
        return None
    from closedloop.io import _is_xdf

    return stream if _is_xdf(Path(path)) else None
