"""Drive your own output device: anything with a `fire(trigger)` method is a `cl.Stimulator`.

    python examples/custom_stimulator.py [RECORDING] [--seconds 30] [--port 9870]

This one sends each trigger as a UDP datagram to a stimulus computer (127.0.0.1 here). `fire`
is called on the loop's timing thread at the delivery moment, after the safety limits allowed
the trigger: it must return at once. `latency_s` (the device's own delay) is taken off every
plan, as the protocol's technical_delay_s is.
"""

import argparse
import json
import socket
from pathlib import Path

from closedloop.lsl.config import use_loopback_config

use_loopback_config()  # this example's streams stay on this machine (before pylsl loads)

import closedloop as cl  # noqa: E402


class UDPStimulator:
    """Sends `{"seq", "phase"}` to HOST:PORT at each trigger."""

    latency_s = 0.0  # measure your device's; e.g. 0.012 for a projector's frame

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sent = 0

    def fire(self, trigger: cl.Trigger):
        self.sock.sendto(json.dumps({"seq": trigger.seq, "phase": trigger.target_phase_deg}).encode(), self.address)
        self.sent += 1
        return {"udp_port": self.address[1]}  # extra fields for the trigger's marker

    def close(self) -> None:
        self.sock.close()


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("recording", nargs="?", default=Path(__file__).parents[1] / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf")
parser.add_argument("--seconds", type=float, default=30.0)
parser.add_argument("--port", type=int, default=9870, help="UDP port of the receiver (0: any free one)")
args = parser.parse_args()

receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the "stimulus computer"
receiver.bind(("127.0.0.1", args.port))  # port 0: any free port
receiver.settimeout(0.0)
device = UDPStimulator("127.0.0.1", receiver.getsockname()[1])
assert isinstance(device, cl.Stimulator)

with cl.Player(args.recording, source_id="example-amp", chunk_size=5):
    session = cl.Session("default", source_id="example-amp", stimulators=[device])
    summary = session.run(duration_s=args.seconds)

received = 0
while True:
    try:
        receiver.recv(1024)
        received += 1
    except BlockingIOError:
        break
print(f"{summary['triggers']} triggers, {device.sent} sent, {received} received; device errors: "
      f"{summary['stimulator_errors'] or 'none'}")
