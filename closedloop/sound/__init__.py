"""Sound: closed-loop auditory stimulation and auditory feedback on the audio device's clock.

- :class:`SoundStimulator` (``run --sound DEVICE``): a Stimulator that plays the protocol's
  ``[sound]`` stimulus (pink-noise burst or WAV file, with ramps) at each delivered trigger,
  each onset placed at an exact output frame so that it reaches the DAC at the planned time;
  for feedback protocols, a continuous tone whose pitch or loudness follows the feedback value.
- :class:`DacClock`: output frame <-> LSL time, from the callbacks' DAC-time readings.
- :func:`output_devices`, :func:`find_output_device`: the PortAudio output devices.

PortAudio (Debian's ``libportaudio2``) is reached through ``sounddevice``; nothing here imports
it before a device is opened or listed.
"""

from closedloop.sound.clock import DacClock
from closedloop.sound.devices import SoundError, find_output_device, output_devices
from closedloop.sound.signals import FeedbackTone, pink_noise, stimulus
from closedloop.sound.stimulator import SoundStimulator, open_sound, start_sound

__all__ = [
    "DacClock",
    "FeedbackTone",
    "SoundError",
    "SoundStimulator",
    "find_output_device",
    "open_sound",
    "start_sound",
    "output_devices",
    "pink_noise",
    "stimulus",
]
