"""PortAudio through ``sounddevice``: importing it with a clear error, finding and listing devices."""

from __future__ import annotations

from closedloop.errors import ClosedLoopError, UsageError

__all__ = ["SoundError", "find_output_device", "output_devices", "sounddevice"]


class SoundError(ClosedLoopError):
    """The sound output cannot be opened or has stopped (exit 1)."""


def sounddevice():
    """The ``sounddevice`` module, or a :class:`SoundError` saying what to install."""
    try:
        import sounddevice as sd
    except OSError as exc:  # the Python package is there, the PortAudio library is not
        raise SoundError(
            f"sound output needs the PortAudio library ({exc}); on Debian or Ubuntu: "
            "apt-get install libportaudio2."
        ) from None
    except ImportError:
        raise SoundError("sound output needs the sounddevice package: pip install sounddevice.") from None
    return sd


def output_devices() -> list[dict]:
    """Every device that can play sound: index, name, host API, channels, default rate and latencies."""
    sd = sounddevice()
    apis = sd.query_hostapis()
    try:
        default_out = sd.default.device[1]
    except (TypeError, IndexError):
        default_out = -1
    out = []
    for dev in sd.query_devices():
        if dev["max_output_channels"] <= 0:
            continue
        out.append({
            "index": dev["index"],
            "name": dev["name"],
            "hostapi": apis[dev["hostapi"]]["name"],
            "channels": dev["max_output_channels"],
            "samplerate_hz": dev["default_samplerate"],
            "low_latency_ms": dev["default_low_output_latency"] * 1e3,
            "high_latency_ms": dev["default_high_output_latency"] * 1e3,
            "default": dev["index"] == default_out,
        })
    return out


def find_output_device(device: int | str | None) -> dict:
    """The output device that ``device`` names: an index, a name or a unique part of one.

    ``None`` or ``"default"`` is the system's default output device.

    Raises
    ------
    UsageError
        When no output device, or more than one, matches; the message lists the devices.
    """
    devices = output_devices()
    listed = "; ".join(f"{d['index']} {d['name']!r} ({d['hostapi']})" for d in devices) or "none"
    if not devices:
        raise UsageError(
            "no sound output device is available (PortAudio found none); on Linux check that ALSA "
            "or PulseAudio has a playback device."
        )
    if device is None or (isinstance(device, str) and device.strip().lower() == "default"):
        for d in devices:
            if d["default"]:
                return d
        return devices[0]
    text = str(device).strip()
    if text.isdigit():
        for d in devices:
            if d["index"] == int(text):
                return d
        raise UsageError(f"no output device has index {text}; output devices: {listed}.")
    exact = [d for d in devices if d["name"].lower() == text.lower()]
    if len(exact) == 1:
        return exact[0]
    partial = [d for d in devices if text.lower() in d["name"].lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise UsageError(f"no output device is called {text!r}; output devices: {listed}.")
    raise UsageError(
        f"{text!r} matches {len(partial)} output devices ("
        + "; ".join(f"{d['index']} {d['name']!r}" for d in partial)
        + "); give its index or its whole name."
    )
