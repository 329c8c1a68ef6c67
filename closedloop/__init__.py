"""closedloop: a real-time closed-loop EEG engine over Lab Streaming Layer."""

__version__ = "0.1.0"
