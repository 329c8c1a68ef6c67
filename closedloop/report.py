"""``closedloop report``: one self-contained HTML report of a recorded or replayed session.

A session is either the XDF file ``closedloop run --record`` writes (the input EEG, the
``Markers`` stream and the ``ClosedLoopState`` stream) or the folder ``closedloop replay``
writes (``events.tsv``, ``summary.json``, ``state.npz``). The report shows the triggers' phases
(as the engine estimated them, and against the offline ground truth of
:mod:`closedloop.groundtruth`), the loop latency, the band amplitude over time with the triggers
and the periods when triggering was not allowed, the feedback value for feedback protocols, and
a summary table. Every number in the table is also written as JSON next to the HTML.

Times in a report are seconds from the first EEG sample of the session. For an XDF session the
marker and State times (LSL local clock) are placed on the EEG samples by a straight-line fit of
the EEG timestamps (one line per stretch between gaps), which removes the timestamps' jitter.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from closedloop.errors import DataError, UsageError

#: A step between EEG timestamps larger than this many sample periods is a gap.
GAP_SAMPLES = 2.5
#: Bins of the polar histograms (degrees each).
POLAR_BIN_DEG = 20.0
#: Latency percentiles in the summary.
LATENCY_PERCENTILES = (50, 95, 99)

STATE_FIELDS = ("time_s", "phase_deg", "amplitude", "feedback", "gate")


# ---------------------------------------------------------------------- the session
@dataclass
class Session:
    """What a report needs from one session, whatever its source.

    Times are seconds from the session's first EEG sample (replay: ``sample / sfreq``).
    """

    source: str  # "xdf" or "replay"
    path: Path
    protocol_name: str
    protocol: object | None  # closedloop.protocol.Protocol, when known
    sfreq: float
    duration_s: float
    band_hz: tuple[float, float] | None
    gate_threshold_uv: float | None
    gate_threshold_inferred: bool
    onset_s: np.ndarray
    phase_deg: np.ndarray  # estimated phase at delivery
    target_phase_deg: np.ndarray
    amplitude: np.ndarray
    events: list[str]
    state: dict[str, np.ndarray]
    latency_s: np.ndarray | None = None  # State push time - newest sample time
    delivery_error_s: np.ndarray | None = None  # marker time - scheduled time
    triggers_dropped: int | None = None
    dropped_by_reason: dict | None = None
    samples: int = 0
    gaps: int | None = None
    missing_samples: int | None = None
    estimator: str | None = None
    derived: np.ndarray | None = None  # the protocol's derived signal, for the ground truth
    truth_note: str = ""
    band_source: str = "protocol"  # "learned" when the engine's own band (individual peak) is known
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.protocol.kind if self.protocol is not None else "phase"

    @property
    def baseline_s(self) -> float | None:
        return float(self.protocol.trigger.baseline_s) if self.protocol is not None else None


def _resolve_protocol(spec: str | None, name_in_session: str, embedded: dict | None, notes: list[str]):
    """The protocol: ``--protocol``, else the one stored in the session, else a preset of that name."""
    from closedloop.errors import ProtocolError
    from closedloop.protocol import load_protocol, parse_protocol

    if spec is not None:
        protocol = load_protocol(spec)
        if name_in_session and protocol.name != name_in_session:
            notes.append(
                f"--protocol {spec} is named {protocol.name!r} but the session ran {name_in_session!r}; "
                "the ground truth uses the one given."
            )
        return protocol
    if embedded is not None:
        data = {k: v for k, v in embedded.items() if k != "source"}
        try:
            return parse_protocol(data, str(embedded.get("source", "")))
        except ProtocolError as exc:
            notes.append(f"the protocol stored with the session could not be read ({exc}).")
            return None
    if name_in_session:
        try:
            return load_protocol(name_in_session)
        except ProtocolError:
            notes.append(
                f"protocol {name_in_session!r} is not a preset, so its channel and band are unknown; "
                "give --protocol FILE for the comparison with the ground truth."
            )
    return None


def _recording_path(given: str | None, stored: str, folder: Path) -> Path | None:
    if given is not None:
        return Path(given)
    if not stored:
        return None
    path = Path(stored)
    if path.is_absolute():
        return path
    for base in (Path.cwd(), folder, folder.parent):
        if (base / path).exists():
            return base / path
    return None


def load_replay(folder: str | Path, *, protocol: str | None = None, recording: str | None = None,
                advance=lambda n: None) -> Session:
    """Read a ``closedloop replay`` output folder (and its recording, for the ground truth)."""
    from closedloop.offline import read_events_tsv

    folder = Path(folder)
    missing = [name for name in ("summary.json", "events.tsv") if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{str(folder)!r} is not a replay output folder: {' and '.join(missing)} missing. "
            "Give a folder written by closedloop replay or an XDF file from closedloop run --record."
        )
    try:
        summary = json.loads((folder / "summary.json").read_text())
        rows = read_events_tsv(folder / "events.tsv")
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise DataError(f"the replay outputs in {str(folder)!r} cannot be read: {exc}.") from None
    notes: list[str] = []
    embedded = summary.get("protocol") if isinstance(summary.get("protocol"), dict) else None
    name = str((embedded or {}).get("name", ""))
    proto = _resolve_protocol(protocol, name, embedded, notes)
    counts = summary.get("counts", {})
    sfreq = float(summary["sfreq"])
    band = counts.get("band_hz")
    band_hz = (float(band[0]), float(band[1])) if band else (
        (proto.band.low_hz, proto.band.high_hz) if proto is not None else None)
    band_source = "learned" if band and proto is not None and proto.band.individual else (
        "protocol")

    state = {k: np.zeros(0) for k in STATE_FIELDS}
    if (folder / "state.npz").is_file():
        with np.load(folder / "state.npz") as npz:
            state = {k: np.asarray(npz[k], dtype=float) for k in STATE_FIELDS if k in npz}
    else:
        notes.append("state.npz is missing, so the amplitude and feedback over time are not shown.")

    session = Session(
        source="replay",
        path=folder,
        protocol_name=name or (proto.name if proto is not None else "?"),
        protocol=proto,
        sfreq=sfreq,
        duration_s=float(summary.get("duration_s", summary.get("n_samples", 0) / sfreq)),
        band_hz=band_hz,
        gate_threshold_uv=counts.get("gate_threshold_uv"),
        gate_threshold_inferred=False,
        onset_s=np.array([r["onset"] for r in rows], dtype=float),
        phase_deg=np.array([r["phase_deg"] for r in rows], dtype=float),
        target_phase_deg=np.array([r["target_phase_deg"] for r in rows], dtype=float),
        amplitude=np.array([r["amplitude"] for r in rows], dtype=float),
        events=[r["trial_type"] for r in rows],
        state=state,
        triggers_dropped=counts.get("triggers_dropped"),
        dropped_by_reason=counts.get("dropped_by_reason"),
        samples=int(summary.get("n_samples", 0)),
        gaps=counts.get("gaps"),
        missing_samples=counts.get("missing_samples"),
        estimator=counts.get("estimator"),
        notes=notes,
        band_source=band_source,
    )
    rec_path = _recording_path(recording, str(summary.get("recording", "")), folder)
    if proto is None:
        session.truth_note = "no protocol, so no ground truth"
    elif rec_path is None or not rec_path.exists():
        session.truth_note = (
            f"the recording {summary.get('recording')!r} was not found; give --recording FILE"
        )
    else:
        from closedloop.io import open_recording

        with open_recording(rec_path) as rec:
            from closedloop.groundtruth import derived_from_recording

            session.derived = derived_from_recording(rec, proto, advance)
    return session


def _quiet_pyxdf_load(path: Path):
    import pyxdf

    logger = logging.getLogger("pyxdf")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    try:
        # clocks synchronised (the input stream onto the local clock), timestamps as recorded
        streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises many kinds on damaged files
        raise DataError(
            f"could not read {str(path)!r} as XDF: {exc}. Give an XDF file from closedloop run "
            "--record or a replay output folder."
        ) from exc
    finally:
        logger.setLevel(level)
        logger.propagate = propagate
    return streams


def _info(stream: dict, key: str, default: str = "") -> str:
    value = stream["info"].get(key, default)
    while isinstance(value, list):
        value = value[0] if value else default
    return default if value is None else str(value)


def _eeg_time_map(stamps: np.ndarray, sfreq: float) -> tuple[np.ndarray, int, int]:
    """Straight-line EEG timestamps per gap-free stretch; also the gap and missing-sample counts."""
    n = stamps.size
    steps = np.diff(stamps)
    breaks = np.flatnonzero(steps > GAP_SAMPLES / sfreq) + 1
    missing = int(np.sum(np.round(steps[breaks - 1] * sfreq) - 1)) if breaks.size else 0
    fitted = np.empty(n)
    for seg in np.split(np.arange(n), breaks):
        if seg.size >= 2:
            slope, intercept = np.polyfit(seg - seg[0], stamps[seg], 1)
            fitted[seg] = intercept + slope * (seg - seg[0])
        else:
            fitted[seg] = stamps[seg]
    return fitted, int(breaks.size), missing


def _position_s(times: np.ndarray, stamps: np.ndarray, sfreq: float) -> np.ndarray:
    """LSL times -> seconds from the first EEG sample (its fractional sample index / sfreq)."""
    times = np.asarray(times, dtype=float)
    index = np.arange(stamps.size, dtype=float)
    if stamps.size < 2:
        return times - stamps[0]
    pos = np.interp(times, stamps, index)
    before, after = times < stamps[0], times > stamps[-1]
    pos[before] = (times[before] - stamps[0]) * sfreq
    pos[after] = index[-1] + (times[after] - stamps[-1]) * sfreq
    return pos / sfreq


def load_xdf(path: str | Path, *, protocol: str | None = None, advance=lambda n: None) -> Session:
    """Read a ``closedloop run --record`` XDF session (EEG, Markers, ClosedLoopState)."""
    path = Path(path)
    streams = _quiet_pyxdf_load(path)
    listing = "; ".join(f"{_info(s, 'name')!r} ({_info(s, 'type')})" for s in streams) or "none"
    states = [s for s in streams if _info(s, "type") == "ClosedLoopState"]
    if not states:
        raise DataError(
            f"{path.name!r} has no ClosedLoopState stream, so it is not a closedloop session "
            f"(streams: {listing}). Give an XDF file from closedloop run --record or a replay folder."
        )
    state_stream = states[0]
    markers = [s for s in streams if _info(s, "type") == "Markers" and _info(s, "channel_format") == "string"]
    eeg_pool = [
        s for s in streams
        if s is not state_stream and _info(s, "channel_format") != "string"
        and float(_info(s, "nominal_srate", "0") or 0) > 0 and len(s["time_stamps"]) > 1
    ]
    if not eeg_pool:
        raise DataError(f"{path.name!r} has no input EEG stream with samples (streams: {listing}).")
    eeg = max(eeg_pool, key=lambda s: len(s["time_stamps"]))
    sfreq = float(_info(eeg, "nominal_srate"))
    stamps, gaps, missing = _eeg_time_map(np.asarray(eeg["time_stamps"], dtype=float), sfreq)
    notes: list[str] = []

    payloads: list[dict] = []
    marker_times = np.zeros(0)
    if markers:
        ours = [s for s in markers if len(s["time_series"]) and '"seq"' in str(s["time_series"][0][0])]
        stream = ours[0] if ours else markers[0]
        for value in stream["time_series"]:
            try:
                payloads.append(json.loads(value[0]))
            except (ValueError, TypeError, IndexError):
                payloads.append({})
        marker_times = np.asarray(stream["time_stamps"], dtype=float)
        bad = sum(1 for p in payloads if "target_phase_deg" not in p)
        if bad:
            notes.append(f"{bad} marker(s) are not closedloop JSON markers and carry no phase.")
    else:
        notes.append("the session has no Markers stream (no trigger was recorded).")

    def field_of(key: str) -> np.ndarray:
        return np.array([p.get(key) if p.get(key) is not None else np.nan for p in payloads], dtype=float)

    name = next((str(p["protocol"]) for p in payloads if "protocol" in p), "")
    if not name:
        desc = state_stream["info"].get("desc")
        if isinstance(desc, list) and desc and isinstance(desc[0], dict):
            name = str((desc[0].get("protocol") or [""])[0] or "")
    # the protocol as the session resolved it, recorded by closedloop run (closedloop.provenance)
    resolved = _recorded_protocol(streams, notes)
    embedded = None
    if resolved is not None and resolved["toml"]:
        from closedloop.protocol import tomllib

        try:
            embedded = {**tomllib.loads(resolved["toml"]), "source": resolved["source"] or name}
        except tomllib.TOMLDecodeError as exc:
            notes.append(f"the protocol recorded in the session is not valid TOML ({exc}).")
        name = name or str(resolved["name"] or "")
    proto = _resolve_protocol(protocol, name, embedded, notes)
    learned = (resolved or {}).get("learned") or {} if protocol is None else {}

    rows = np.asarray(state_stream["time_series"], dtype=float).reshape(-1, 5)
    pushed = np.asarray(state_stream["time_stamps"], dtype=float)
    state = {
        "time_s": _position_s(rows[:, 0], stamps, sfreq),
        "phase_deg": rows[:, 1],
        "amplitude": rows[:, 2],
        "feedback": rows[:, 3],
        "gate": rows[:, 4],
    }
    threshold, inferred = None, False
    if proto is not None and proto.kind == "phase":
        kind = proto.trigger.gate_kind
        if kind == "none":
            threshold = 0.0
        elif kind == "uv":
            threshold = float(proto.trigger.gate_value)
    if learned.get("gate_threshold_uv") is not None:
        threshold, inferred = float(learned["gate_threshold_uv"]), False
    if threshold is None and np.any(rows[:, 4] > 0.5):
        threshold, inferred = float(np.nanmin(rows[rows[:, 4] > 0.5, 2])), True
    band_hz = (proto.band.low_hz, proto.band.high_hz) if proto is not None else None
    if learned.get("band_hz"):
        band_hz = (float(learned["band_hz"][0]), float(learned["band_hz"][1]))

    session = Session(
        source="xdf",
        path=path,
        protocol_name=name or (proto.name if proto is not None else "?"),
        protocol=proto,
        sfreq=sfreq,
        duration_s=stamps.size / sfreq,
        band_hz=band_hz,
        gate_threshold_uv=threshold,
        gate_threshold_inferred=inferred,
        onset_s=_position_s(marker_times, stamps, sfreq),
        phase_deg=field_of("phase_deg"),
        target_phase_deg=field_of("target_phase_deg"),
        amplitude=field_of("amplitude"),
        events=[str(p.get("event", "?")) for p in payloads],
        state=state,
        latency_s=pushed - rows[:, 0],
        delivery_error_s=marker_times - field_of("scheduled_ts"),
        samples=int(stamps.size),
        gaps=gaps,
        missing_samples=missing,
        estimator=learned.get("estimator"),
        notes=notes,
    )
    if learned.get("band_hz"):
        session.band_source = "learned" if proto is not None and proto.band.individual else "protocol"
    # what the recording does not hold (drops by reason; the learned values of an older recording)
    # comes from the summary closedloop run writes beside it
    run_summary = _run_summary(path)
    engine = (run_summary or {}).get("engine") or {}
    if run_summary is not None:
        session.triggers_dropped = run_summary.get("triggers_dropped")
        session.dropped_by_reason = run_summary.get("dropped_by_reason")
    if engine.get("band_hz") and not learned.get("band_hz"):
        session.band_hz = (float(engine["band_hz"][0]), float(engine["band_hz"][1]))
        session.band_source = "learned" if proto is not None and proto.band.individual else "protocol"
        session.estimator = session.estimator or engine.get("estimator")
        if session.gate_threshold_inferred and engine.get("gate_threshold_uv") is not None:
            session.gate_threshold_uv, session.gate_threshold_inferred = float(engine["gate_threshold_uv"]), False
    elif proto is not None and proto.band.individual and not learned.get("band_hz"):
        notes.append("the protocol centres its band on the individual peak, which the recording does not "
                     "store (and no run summary lies beside it); the ground truth uses the protocol's band.")
    if proto is None:
        session.truth_note = "the protocol is unknown (give --protocol FILE)"
    else:
        from closedloop.io import open_recording

        with open_recording(path, stream=_info(eeg, "name")) as rec:
            if rec.n_samples != stamps.size:
                raise DataError(f"the EEG stream of {path.name!r} reads back with {rec.n_samples} samples, "
                                f"not {stamps.size}; the file may be damaged.")
            from closedloop.groundtruth import derived_from_recording

            session.derived = derived_from_recording(rec, proto, advance)
    return session


def _run_summary(path: Path) -> dict | None:
    """The summary ``closedloop run --record FILE`` writes beside it (``FILE.summary.json``), if any."""
    beside = path.with_name(path.name + ".summary.json")
    try:
        return json.loads(beside.read_text()) if beside.is_file() else None
    except (OSError, ValueError):
        return None


def _recorded_protocol(streams: list[dict], notes: list[str]) -> dict | None:
    """The ``ClosedLoopProtocol`` stream of a recording, read (None when it has none)."""
    from closedloop.provenance import STREAM_TYPE, read_protocol_stream

    found = [s for s in streams if _info(s, "type") == STREAM_TYPE]
    if not found:
        return None
    if len(found) > 1:
        notes.append(f"the recording holds {len(found)} protocol streams; the first is used.")
    return read_protocol_stream(found[0])


def load_session(path: str | Path, *, protocol: str | None = None, recording: str | None = None,
                 advance=lambda n: None) -> Session:
    """A replay output folder or a ``--record`` XDF file, whichever ``path`` is."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"session {str(path)!r} does not exist. Give an XDF file from closedloop run --record "
            "or a folder written by closedloop replay."
        )
    if path.is_dir():
        return load_replay(path, protocol=protocol, recording=recording, advance=advance)
    if recording is not None:
        raise UsageError("--recording applies to replay folders only; an XDF session holds its own EEG.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"XDF:":
        raise DataError(
            f"{str(path)!r} is neither an XDF file nor a replay output folder. Give an XDF file from "
            "closedloop run --record or a folder written by closedloop replay."
        )
    return load_xdf(path, protocol=protocol, advance=advance)


# ---------------------------------------------------------------------- the numbers
def _clean(value):
    """JSON-safe: NaN and infinities become null, numpy scalars plain Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) + 0.0 if math.isfinite(value) else None  # + 0.0: no "-0.00"
    return value


def _percentiles_ms(values_s: np.ndarray | None) -> dict | None:
    if values_s is None:
        return None
    v = np.asarray(values_s, dtype=float)
    v = v[np.isfinite(v)] * 1e3
    out = {"n": int(v.size)}
    for q in LATENCY_PERCENTILES:
        out[f"p{q}"] = float(np.percentile(v, q)) if v.size else math.nan
    out["max"] = float(v.max()) if v.size else math.nan
    out["mean"] = float(v.mean()) if v.size else math.nan
    return out


def truth_margin_s(sfreq: float, band_hz: tuple[float, float]) -> float:
    """Half the ground-truth filter: triggers closer than this to either end are not scored."""
    from closedloop.groundtruth import truth_fir

    return (truth_fir(sfreq, band_hz).shape[0] // 2) / sfreq


def true_phases(session: Session) -> tuple[np.ndarray, np.ndarray]:
    """The offline true phase at each trigger (NaN where not scored) and the mask of scored triggers."""
    from closedloop.groundtruth import phase_errors

    onsets = session.onset_s
    true = np.full(onsets.shape, np.nan)
    if session.derived is None or session.band_hz is None or not onsets.size:
        return true, np.zeros(onsets.shape, dtype=bool)
    margin = truth_margin_s(session.sfreq, session.band_hz)
    end = (session.derived.size - 1) / session.sfreq
    scored = (onsets >= margin) & (onsets <= end - margin) & np.isfinite(session.target_phase_deg)
    if scored.any():
        true[scored], _ = phase_errors(session.derived, session.sfreq, session.band_hz,
                                       onsets[scored], session.target_phase_deg[scored])
    return true, scored


def compute_numbers(session: Session) -> dict:
    """Every figure of the summary table, as a JSON-ready dict (NaN where undefined)."""
    from closedloop.angles import wrap_deg
    from closedloop.groundtruth import accuracy

    n = int(session.onset_s.size)
    proto = session.protocol
    baseline = session.baseline_s
    after = session.duration_s - baseline if baseline is not None else math.nan
    est_err = wrap_deg(session.phase_deg - session.target_phase_deg) if n else np.zeros(0)
    true, scored = true_phases(session)
    true_err = wrap_deg(true - session.target_phase_deg) if n else np.zeros(0)
    targets = np.unique(session.target_phase_deg[np.isfinite(session.target_phase_deg)])
    numbers = {
        "session": {
            "source": session.source,
            "path": str(session.path),
            "protocol": session.protocol_name,
            "kind": session.kind,
            "target_phase_deg": float(targets[0]) if targets.size == 1 else None,
            "band_hz": list(session.band_hz) if session.band_hz else None,
            "band_source": session.band_source,
            "estimator": session.estimator,
            "sfreq": session.sfreq,
            "duration_s": session.duration_s,
            "baseline_s": baseline,
            "samples": session.samples,
            "gaps": session.gaps,
            "missing_samples": session.missing_samples,
            "gate_threshold_uv": session.gate_threshold_uv,
            "gate_threshold_inferred": session.gate_threshold_inferred,
            "gate_open_share": float(np.mean(session.state["gate"] > 0.5)) if session.state["gate"].size else None,
        },
        "triggers": {
            "delivered": n,
            "dropped": session.triggers_dropped,
            "dropped_by_reason": session.dropped_by_reason,
            "events": {e: session.events.count(e) for e in sorted(set(session.events))},
            "rate_per_min": 60.0 * n / session.duration_s if session.duration_s > 0 else math.nan,
            "rate_per_min_after_baseline": 60.0 * n / after if after > 0 else math.nan,
            "interval_s_min": float(np.diff(session.onset_s).min()) if n > 1 else math.nan,
        },
        "phase_estimated": accuracy(est_err),
        "phase_true": dict(accuracy(true_err[scored]) if n else accuracy(np.zeros(0)),
                           n_unscored=int(n - scored.sum())) if session.derived is not None else None,
        "latency_ms": _percentiles_ms(session.latency_s),
        "delivery_error_ms": _percentiles_ms(session.delivery_error_s),
        "notes": list(session.notes),
        "per_trigger": [
            {"seq": k + 1, "onset_s": float(session.onset_s[k]), "event": session.events[k],
             "target_phase_deg": float(session.target_phase_deg[k]), "phase_deg": float(session.phase_deg[k]),
             "true_phase_deg": float(true[k]), "true_error_deg": float(true_err[k]),
             "amplitude": float(session.amplitude[k])}
            for k in range(n)
        ],
    }
    if numbers["phase_true"] is None:
        numbers["phase_true_note"] = f"not available: {session.truth_note}"
    if session.latency_s is None:
        numbers["latency_note"] = ("not applicable: a replay runs on the sample clock, so there is no "
                                   "loop latency to measure; record a live session (closedloop run --record)")
    if proto is not None and proto.kind == "feedback":
        fb = session.state["feedback"]
        fb = fb[np.isfinite(fb)]
        numbers["feedback"] = {
            "measure": proto.feedback.measure,
            "n": int(fb.size),
            "mean": float(fb.mean()) if fb.size else math.nan,
            "sd": float(fb.std()) if fb.size else math.nan,
            "min": float(fb.min()) if fb.size else math.nan,
            "max": float(fb.max()) if fb.size else math.nan,
        }
    return _clean(numbers)


# ---------------------------------------------------------------------- figures
def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (and closed): how every report embeds its figures."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _polar_panel(ax, phases_deg: np.ndarray, target: float | None, title: str) -> None:
    edges = np.radians(np.arange(-180.0, 180.0 + POLAR_BIN_DEG, POLAR_BIN_DEG))
    p = phases_deg[np.isfinite(phases_deg)]
    counts, _ = np.histogram(np.radians(p), bins=edges)
    width = np.radians(POLAR_BIN_DEG)
    ax.bar(edges[:-1] + width / 2, counts, width=width, color="#4c72b0", edgecolor="white", alpha=0.85)
    top = max(1, counts.max() if counts.size else 1)
    if target is not None:
        ax.plot([np.radians(target)] * 2, [0, top], color="#c44e52", lw=2, zorder=3)
    if p.size:
        vec = np.mean(np.exp(1j * np.radians(p)))
        ax.annotate("", xy=(np.angle(vec), abs(vec) * top), xytext=(0, 0),
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 2})
    ax.set_title(f"{title}\n(n = {p.size})", fontsize=10)
    ax.set_xticks(np.radians([0, 90, 180, 270]))
    ax.set_xticklabels(["0 peak", "90", "180 trough", "-90"])
    ax.set_rlabel_position(67.5)
    ax.tick_params(axis="y", labelsize=7)


def figure_phases(session: Session, true: np.ndarray) -> bytes:
    """Polar histograms: estimated phase at delivery, and the offline true phase."""
    import matplotlib.pyplot as plt

    targets = np.unique(session.target_phase_deg[np.isfinite(session.target_phase_deg)])
    target = float(targets[0]) if targets.size == 1 else None
    panels = 2 if session.derived is not None else 1
    fig = plt.figure(figsize=(4.2 * panels, 4.4))
    ax = fig.add_subplot(1, panels, 1, projection="polar")
    _polar_panel(ax, session.phase_deg, target, "estimated phase at delivery")
    if panels == 2:
        ax2 = fig.add_subplot(1, 2, 2, projection="polar")
        _polar_panel(ax2, true, target, "true phase (offline ground truth)")
    fig.tight_layout()
    return figure_png(fig)


def figure_latency(session: Session) -> bytes:
    """Histogram of the State latency (newest input sample -> State pushed)."""
    import matplotlib.pyplot as plt

    lat = np.asarray(session.latency_s, dtype=float) * 1e3
    lat = lat[np.isfinite(lat)]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if lat.size:
        ax.hist(lat, bins=min(60, max(10, lat.size // 10)), color="#55a868")
        for q, style in zip(LATENCY_PERCENTILES, (":", "--", "-")):
            v = np.percentile(lat, q)
            ax.axvline(v, color="black", ls=style, lw=1, label=f"p{q} {v:.2f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("latency, newest sample to State pushed (ms)")
    ax.set_ylabel("State samples")
    fig.tight_layout()
    return figure_png(fig)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Start and stop indices of the runs of True in ``mask``."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _shade(ax, t: np.ndarray, mask: np.ndarray, **kw) -> None:
    first = True
    for a, b in _runs(mask):
        end = t[b] if b < t.size else t[-1]
        ax.axvspan(t[a], end, lw=0, **(kw if first else {k: v for k, v in kw.items() if k != "label"}))
        first = False


def figure_amplitude(session: Session) -> bytes:
    """Band amplitude over time, triggers, and the periods when triggering was not allowed."""
    import matplotlib.pyplot as plt

    st = session.state
    t, amp, gate = st["time_s"], st["amplitude"], st["gate"] > 0.5
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.plot(t, amp, color="#4c72b0", lw=0.7, label="band amplitude")
    baseline = session.baseline_s or 0.0
    if t.size and baseline > 0:
        # the baseline: hatched blue, unlike any hold
        ax.axvspan(t[0], min(baseline, t[-1]), facecolor="#cfe0f5", edgecolor="#4c72b0", hatch="//", lw=0,
                   alpha=0.5, label="baseline (learning; no triggers)", zorder=0)
    if session.kind == "phase" and t.size:
        in_base = t < baseline
        thr = session.gate_threshold_uv
        held = ~gate & ~in_base
        if thr is not None:
            hold = held & (amp >= thr)
            low = held & ~hold
            _shade(ax, t, hold, color="#c44e52", alpha=0.3, label="hold (artifact, gap, settling, pause)")
            _shade(ax, t, low, color="#8c8c8c", alpha=0.18, label="gate closed (amplitude below threshold)")
            ax.axhline(thr, color="#333333", ls="--", lw=1,
                       label="gate threshold" + (" (inferred)" if session.gate_threshold_inferred else ""))
        else:
            _shade(ax, t, held, color="#c44e52", alpha=0.3, label="gate closed or held")
    if session.onset_s.size:
        ax.plot(session.onset_s, session.amplitude, "v", color="#c44e52", ms=5, label="trigger")
    ax.set_xlabel("time from the first sample (s)")
    ax.set_ylabel("band amplitude (µV)")
    if t.size:
        ax.set_xlim(t[0], t[-1])
    # the legend below the axes: it never covers the data
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    fig.tight_layout()
    return figure_png(fig)


def trigger_locked(session: Session, half_window_s: float = 0.5) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Times, and mean of the band signal (zero-phase ground-truth filter) around each trigger; n used.

    Each epoch is read at the trigger's exact time (between samples) on a grid of the sampling
    period. None when there is no derived signal or no trigger with a whole window.
    """
    if session.derived is None or session.band_hz is None or not session.onset_s.size:
        return None
    from closedloop.groundtruth import band_analytic

    band = band_analytic(session.derived, session.sfreq, session.band_hz).real
    grid = np.arange(-half_window_s, half_window_s + 0.5 / session.sfreq, 1.0 / session.sfreq)
    index = np.arange(band.size) / session.sfreq
    end = (band.size - 1) / session.sfreq
    onsets = session.onset_s[(session.onset_s - half_window_s >= 0) & (session.onset_s + half_window_s <= end)]
    if not onsets.size:
        return None
    epochs = np.array([np.interp(t + grid, index, band) for t in onsets])
    return grid, epochs, int(onsets.size)


def figure_trigger_locked(session: Session) -> bytes | str:
    """The band signal averaged around the triggers: a wave whose phase at 0 is the phase hit."""
    import matplotlib.pyplot as plt

    locked = trigger_locked(session)
    if locked is None:
        return "No trigger-locked average: no trigger with half a second of data either side, or no ground truth."
    grid, epochs, n = locked
    mean = epochs.mean(axis=0)
    sem = epochs.std(axis=0) / math.sqrt(n)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.fill_between(grid * 1e3, mean - sem, mean + sem, color="#4c72b0", alpha=0.25, lw=0, label="± SEM")
    ax.plot(grid * 1e3, mean, color="#4c72b0", lw=1.5, label=f"mean of {n} triggers")
    ax.axvline(0, color="#c44e52", lw=1.5, label="trigger")
    ax.axhline(0, color="#888888", lw=0.8)
    targets = np.unique(session.target_phase_deg[np.isfinite(session.target_phase_deg)])
    title = "band signal around the triggers (zero-phase ground-truth filter)"
    if targets.size == 1:
        title += f"; target {targets[0]:g}°"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("time from the trigger (ms)")
    ax.set_ylabel("band signal (µV)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    fig.tight_layout()
    return figure_png(fig)


def figure_spectrum(session: Session) -> bytes | str:
    """Power spectrum of the protocol's derived signal (Welch, 2 s segments), the band used shaded."""
    import matplotlib.pyplot as plt
    from scipy.signal import welch

    if session.derived is None:
        return "No spectrum: the recording (or the protocol's channel) is not available."
    x = session.derived - np.mean(session.derived)
    nper = int(min(x.size, 2 * session.sfreq))
    freqs, power = welch(x, fs=session.sfreq, nperseg=nper)
    top = min(session.sfreq / 2, max(45.0, 2.5 * (session.band_hz[1] if session.band_hz else 20.0)))
    keep = (freqs > 0) & (freqs <= top)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.semilogy(freqs[keep], power[keep], color="#4c72b0", lw=1)
    if session.band_hz:
        label = "band used" + (" (learned, individual peak)" if session.band_source == "learned" else "")
        ax.axvspan(*session.band_hz, color="#dd8452", alpha=0.3, lw=0, label=label)
        ax.legend(fontsize=7)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("power (µV²/Hz)")
    fig.tight_layout()
    return figure_png(fig)


def figure_feedback(session: Session) -> bytes:
    """The protocol's feedback value over time."""
    import matplotlib.pyplot as plt

    st = session.state
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(st["time_s"], st["feedback"], color="#8172b3", lw=0.8, label="feedback value")
    if session.baseline_s:
        ax.axvspan(0, session.baseline_s, facecolor="#cfe0f5", edgecolor="#4c72b0", hatch="//", lw=0, alpha=0.5,
                   label="baseline (reference for the z-score)", zorder=0)
    if session.protocol is not None and session.protocol.feedback.zscore:
        lo, hi = session.protocol.display.range
        ax.axhspan(lo, hi, color="#55a868", alpha=0.08, lw=0, label=f"participant's display range {lo:g} to {hi:g}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    ax.set_xlabel("time from the first sample (s)")
    measure = session.protocol.feedback.measure if session.protocol is not None else "feedback"
    ax.set_ylabel(f"feedback ({measure})")
    fig.tight_layout()
    return figure_png(fig)


# ---------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1040px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}h2{margin-top:1.6em}img{max-width:100%}
.note{color:#666}.scroll{max-height:420px;overflow:auto;border:1px solid #ddd}
"""

# (json path, label, format, scale) of each row of the summary table
_ROWS = [
    ("session.duration_s", "duration (s)", ".2f"),
    ("session.sfreq", "sampling rate (Hz)", "g"),
    ("session.samples", "samples", "d"),
    ("session.gaps", "gaps in the input", "d"),
    ("session.missing_samples", "missing samples", "d"),
    ("session.gate_open_share", "share of time the gate was open", ".3f"),
    ("session.gate_threshold_uv", "gate threshold (µV)", ".2f"),
    ("triggers.delivered", "triggers delivered", "d"),
    ("triggers.dropped", "triggers dropped", "d"),
    ("triggers.rate_per_min", "trigger rate (per min)", ".2f"),
    ("triggers.rate_per_min_after_baseline", "trigger rate after the baseline (per min)", ".2f"),
    ("triggers.interval_s_min", "shortest interval between triggers (s)", ".3f"),
    ("phase_true.n", "triggers scored against the ground truth", "d"),
    ("phase_true.mean_deg", "true phase error: circular mean (deg)", "+.2f"),
    ("phase_true.sd_deg", "true phase error: circular SD (deg)", ".2f"),
    ("phase_true.plv", "true phase error: PLV", ".3f"),
    ("phase_true.within_45", "true phase error: share within ±45°", ".3f"),
    ("phase_estimated.mean_deg", "estimated phase error: circular mean (deg)", "+.2f"),
    ("phase_estimated.sd_deg", "estimated phase error: circular SD (deg)", ".2f"),
    ("phase_estimated.plv", "estimated phase error: PLV", ".3f"),
    ("phase_estimated.within_45", "estimated phase error: share within ±45°", ".3f"),
    ("latency_ms.n", "State samples (latency)", "d"),
    ("latency_ms.p50", "latency p50 (ms)", ".3f"),
    ("latency_ms.p95", "latency p95 (ms)", ".3f"),
    ("latency_ms.p99", "latency p99 (ms)", ".3f"),
    ("latency_ms.max", "latency max (ms)", ".3f"),
    ("delivery_error_ms.p50", "delivery after schedule p50 (ms)", ".3f"),
    ("delivery_error_ms.p99", "delivery after schedule p99 (ms)", ".3f"),
    ("feedback.mean", "feedback mean", ".4g"),
    ("feedback.sd", "feedback SD", ".4g"),
]


def lookup(numbers: dict, key: str):
    """``numbers["a"]["b"]`` for ``key = "a.b"``; None when any part is missing."""
    value = numbers
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _format(value, spec: str) -> str:
    if value is None:
        return "n/a"
    if spec == "d":
        return str(int(value))
    return format(float(value), spec)


#: Rows of the per-trigger table in the HTML (all of them are in the JSON).
MAX_TABLE_ROWS = 2000


def _cell(value, spec: str) -> str:
    return "" if value is None else format(float(value), spec)


def render_html(numbers: dict, figures: dict[str, bytes | str]) -> str:
    """The report: summary table, figures as embedded PNGs (or a sentence where one does not apply)."""
    s = numbers["session"]
    e = html.escape
    head = (
        f"<h1>closedloop session report</h1><p>{e(s['source'])} session <code>{e(s['path'])}</code>; "
        f"protocol <b>{e(str(s['protocol']))}</b> ({e(str(s['kind']))})"
    )
    if s.get("target_phase_deg") is not None:
        head += f", target {s['target_phase_deg']:g}°"
    if s.get("band_hz"):
        head += f", band {s['band_hz'][0]:.2f}-{s['band_hz'][1]:.2f} Hz"
        head += " (learned from the baseline: individual peak)" if s.get("band_source") == "learned" else " (the protocol's)"
    if s.get("estimator"):
        head += f", estimator {e(s['estimator'])}"
    head += ".</p>"
    rows = []
    for key, label, spec in _ROWS:
        if key.split(".")[0] not in numbers or numbers[key.split(".")[0]] is None:
            continue
        value = lookup(numbers, key)
        rows.append(f'<tr><th>{e(label)}</th><td class="num" data-key="{key}">{_format(value, spec)}</td></tr>')
    page_head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>closedloop report</title>"
                 f"<style>{_CSS}</style></head><body>")
    parts = [page_head, head, "<h2>Summary</h2><table>", *rows, "</table>"]
    if numbers["triggers"].get("dropped_by_reason"):
        reasons = ", ".join(f"{e(k)}: {v}" for k, v in numbers["triggers"]["dropped_by_reason"].items())
        parts.append(f"<p>Dropped triggers by reason: {reasons}.</p>")
    captions = {
        "phases": "Phase of the triggers at delivery: as the engine estimated it, and the offline ground "
                  "truth (zero-phase FIR band-pass and Hilbert transform of the whole recording). "
                  "Red: the target; arrow: the mean vector (its length is the PLV).",
        "latency": "Loop latency: the State sample's push time minus the time of the newest input sample "
                   "the engine had processed.",
        "amplitude": "Band amplitude over time with the triggers; shaded where triggering was not allowed.",
        "feedback": "The protocol's feedback value over time (what the participant saw, before the page's own "
                    "smoothing).",
        "locked": "Trigger-locked average of the band signal: the derived signal through the zero-phase "
                  "ground-truth band-pass, averaged around each trigger. Triggers at the target phase make a "
                  "wave whose phase at 0 ms is the target (peak: a maximum; trough: a minimum).",
        "spectrum": "Power spectrum of the protocol's derived signal over the whole session; shaded: the band "
                    "the engine used.",
    }
    titles = {"phases": "Trigger phases", "latency": "Latency", "amplitude": "Band amplitude",
              "feedback": "Feedback", "locked": "Trigger-locked average", "spectrum": "Spectrum"}
    for key, fig in figures.items():
        parts.append(f"<h2>{titles[key]}</h2><p>{e(captions[key])}</p>")
        if isinstance(fig, bytes):
            data = base64.b64encode(fig).decode("ascii")
            parts.append(f'<img id="fig-{key}" alt="{e(titles[key])}" src="data:image/png;base64,{data}">')
        else:
            parts.append(f'<p class="note" id="fig-{key}">{e(fig)}</p>')
    rows = numbers.get("per_trigger") or []
    if rows:
        shown = rows[:MAX_TABLE_ROWS]
        more = f" (the first {len(shown)} of {len(rows)}; all in the JSON)" if len(rows) > len(shown) else ""
        parts.append(f"<h2>Triggers</h2><p>One row per delivered trigger{more}: onset from the first sample, "
                     "the phase aimed at, the engine's estimate at delivery, the offline true phase and its error "
                     "against the target (empty where the ground truth cannot score it), and the band amplitude.</p>")
        parts.append('<div class="scroll"><table id="triggers"><tr><th>#</th><th>onset (s)</th><th>event</th>'
                     "<th>target (°)</th><th>estimated (°)</th><th>true (°)</th><th>true error (°)</th>"
                     "<th>amplitude (µV)</th></tr>")
        for r in shown:
            cells = [str(r["seq"]), _cell(r["onset_s"], ".3f"), e(str(r["event"])), _cell(r["target_phase_deg"], "+.1f"),
                     _cell(r["phase_deg"], "+.1f"), _cell(r["true_phase_deg"], "+.1f"),
                     _cell(r["true_error_deg"], "+.1f"), _cell(r["amplitude"], ".2f")]
            parts.append("<tr>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
        parts.append("</table></div>")
    notes = list(numbers.get("notes", []))
    for key in ("phase_true_note", "latency_note"):
        if key in numbers:
            notes.append(f"{'Ground truth' if key == 'phase_true_note' else 'Latency'}: {numbers[key]}.")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------- driver
def make_report(session_path: str | Path, out: str | Path | None = None, *, protocol: str | None = None,
                recording: str | None = None, progress=None) -> tuple[Path, Path, dict]:
    """Write ``out`` (HTML) and ``out`` with ``.json`` for a session; returns both paths and the numbers.

    Parameters
    ----------
    session_path : str or Path
        An XDF file from ``closedloop run --record`` or a ``closedloop replay`` output folder.
    out : str or Path, optional
        The HTML file. Default: ``report.html`` inside a replay folder, or the XDF's name with
        ``.html``.
    protocol : str, optional
        Protocol file or preset, when the session's own is not a preset (XDF) or to override it.
    recording : str, optional
        Replay folders: the recording, when the path in ``summary.json`` no longer leads to it.
    progress : callable, optional
        Called as ``progress(1)`` after each of the report's five steps (a progress bar's advance).
    """
    import matplotlib

    matplotlib.use("Agg")
    advance = progress or (lambda n: None)
    session_path = Path(session_path)
    if out is None:
        out = session_path / "report.html" if session_path.is_dir() else session_path.with_suffix(".html")
    out = Path(out)
    if out.suffix.lower() != ".html":
        raise UsageError(f"--out must name an .html file, got {str(out)!r}.")
    if not out.parent.is_dir():
        raise UsageError(f"the folder of --out, {str(out.parent)!r}, does not exist; create it first.")
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; give an .html file name.")
    session = load_session(session_path, protocol=protocol, recording=recording)
    advance(1)
    true, _ = true_phases(session)
    numbers = compute_numbers(session)
    advance(1)
    feedback = session.kind == "feedback"
    figures: dict[str, bytes | str] = {}
    if feedback:  # feedback over time first; no empty trigger sections
        figures["feedback"] = figure_feedback(session)
    else:
        figures["phases"] = figure_phases(session, true)
        figures["locked"] = figure_trigger_locked(session)
    advance(1)
    if session.latency_s is not None:
        figures["latency"] = figure_latency(session)
    else:
        figures["latency"] = ("Latency does not apply to a replay: it runs on the sample clock. "
                              "Record a live session with closedloop run --record to measure it.")
    figures["amplitude"] = figure_amplitude(session)
    advance(1)
    if not feedback and np.isfinite(session.state["feedback"]).any():
        figures["feedback"] = figure_feedback(session)
    figures["spectrum"] = figure_spectrum(session)
    advance(1)
    out.write_text(render_html(numbers, figures), encoding="utf-8")
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(numbers, indent=2) + "\n")
    return out, json_path, numbers
