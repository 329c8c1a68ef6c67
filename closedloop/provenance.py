"""The protocol as a session resolved it, for the recording and for reports.

A protocol file names what to do; a session also *learns* things: the band (centred on the
individual peak), the amplitude gate's threshold, the estimator's fitted weights. A report made
from the recording must use those, not the preset of the same name. ``closedloop run --record``
therefore writes a stream of its own into the XDF file, ``closedloop-protocol`` of type
``ClosedLoopProtocol`` (one string channel, irregular rate), which pyxdf and LabRecorder's readers
load like any marker stream:

- its header's ``<desc>`` holds the protocol as TOML (``<protocol_toml>``), its name and where it
  came from (``<protocol_source>``: a preset name or a file path, with the file's SHA-256);
- its first sample, written when the session starts, is a JSON object with ``"stage": "start"``
  and the same TOML, name and source;
- its second sample, written when the baseline is learnt, has ``"stage": "learned"``: ``band_hz``,
  ``individual_peak_hz``, ``gate_threshold_uv``, ``estimator`` (name), ``estimator_params``,
  ``estimator_digest`` (SHA-256 of the fitted weights and corrections) and ``fit_error``.

:func:`read_protocol_stream` reads it back from a stream pyxdf loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

#: The recorded stream's type and name.
STREAM_TYPE = "ClosedLoopProtocol"
STREAM_NAME = "closedloop-protocol"
#: Attributes of a fitted estimator that hold what it learnt (fixed after ``fit``).
FITTED_ATTRIBUTES = ("weights", "correction", "period_s", "offset_deg", "chosen_ridge")


def _source_info(protocol) -> dict:
    source = str(getattr(protocol, "source", "") or "")
    info = {"source": source, "source_sha256": None}
    path = Path(source)
    if source and path.is_file():
        info["source"] = str(path.resolve())
        info["source_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return info


def start_record(protocol) -> dict:
    """The first sample: the protocol as TOML, its name and where it came from."""
    from closedloop.protocol import protocol_to_toml

    return {
        "stage": "start",
        "name": protocol.name,
        "kind": protocol.kind,
        **_source_info(protocol),
        "toml": protocol_to_toml(protocol),
    }


def estimator_digest(estimator) -> str | None:
    """SHA-256 over an estimator's name, parameters and fitted values (None without one)."""
    if estimator is None:
        return None
    h = hashlib.sha256()
    h.update(str(getattr(estimator, "name", type(estimator).__name__)).encode())
    params = getattr(estimator, "params", {})
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for attr in FITTED_ATTRIBUTES:
        if not hasattr(estimator, attr):
            continue
        value = np.asarray(getattr(estimator, attr))
        h.update(attr.encode())
        h.update(np.ascontiguousarray(value, dtype=np.complex128).tobytes())
    return h.hexdigest()


def learned_ready(engine) -> bool:
    """True once the engine has learnt all it will from the baseline (or failed to)."""
    if not engine.baseline_done:
        return False
    return engine.kind != "phase" or engine.estimator is not None or engine.fit_error is not None


def learned_record(engine) -> dict:
    """The second sample: what the engine learnt from the baseline."""
    est = engine.estimator

    def number(value):
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    return {
        "stage": "learned",
        "band_hz": [float(engine.band_hz[0]), float(engine.band_hz[1])],
        "individual_peak_hz": number(engine.individual_peak_hz),
        "gate_threshold_uv": number(engine.gate_threshold) if engine.kind == "phase" else None,
        "estimator": getattr(est, "name", None),
        "estimator_params": dict(getattr(est, "params", {}) or {}) if est is not None else None,
        "estimator_digest": estimator_digest(est),
        "fit_error": engine.fit_error,
        "feedback_mean": number(getattr(engine, "_fb_mean", None)) if engine.kind == "feedback" else None,
        "feedback_std": number(getattr(engine, "_fb_std", None)) if engine.kind == "feedback" else None,
    }


def header_xml(protocol, source_id: str) -> str:
    """The XDF stream header of the protocol stream (the TOML in its description)."""
    from closedloop.xdf import XDFWriter

    record = start_record(protocol)
    desc = (
        f"<protocol_name>{escape(protocol.name)}</protocol_name>"
        f"<protocol_source>{escape(record['source'])}</protocol_source>"
        f"<protocol_source_sha256>{record['source_sha256'] or ''}</protocol_source_sha256>"
        f"<protocol_toml>{escape(record['toml'])}</protocol_toml>"
    )
    return XDFWriter.stream_header_xml(
        STREAM_NAME, STREAM_TYPE, 1, 0.0, "string", source_id, ch_labels=["protocol"], desc_xml=desc
    )


def dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), default=str)


def read_protocol_stream(stream: dict) -> dict:
    """From a pyxdf stream of type ``ClosedLoopProtocol``: ``{"toml", "name", "source", "learned"}``.

    The samples win over the header (they are written as the session learns); missing parts are
    None.
    """
    out = {"toml": None, "name": None, "source": None, "learned": None}
    info = stream.get("info", {})
    desc = info.get("desc")
    desc = desc[0] if isinstance(desc, list) and desc else desc
    if isinstance(desc, dict):
        for key, target in (("protocol_toml", "toml"), ("protocol_name", "name"), ("protocol_source", "source")):
            value = desc.get(key)
            while isinstance(value, list):
                value = value[0] if value else None
            if value:
                out[target] = str(value)
    for sample in stream.get("time_series", []):
        text = sample[0] if isinstance(sample, (list, tuple)) and sample else sample
        try:
            record = json.loads(text)
        except (TypeError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if record.get("stage") == "start":
            for key in ("toml", "name", "source"):
                if record.get(key):
                    out[key] = record[key]
        elif record.get("stage") == "learned":
            out["learned"] = record
    return out
