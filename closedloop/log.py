"""Logging: the library logs through the ``closedloop`` logger and never prints.

A script sees nothing unless it configures logging (``logging.basicConfig(level="INFO")``);
the command line installs :func:`command_handler`, which prints each record as one line
``closedloop COMMAND: message`` on stderr, as the commands always did.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["command_handler", "logger"]

logger = logging.getLogger("closedloop")
logger.addHandler(logging.NullHandler())


class _CommandFormatter(logging.Formatter):
    def __init__(self, command: str) -> None:
        super().__init__()
        self.prefix = f"closedloop {command}: "

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and logger.isEnabledFor(logging.DEBUG):
            text += "\n" + self.formatException(record.exc_info)
        return self.prefix + text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def command_handler(command: str, level: int = logging.INFO) -> logging.Handler:
    """Print the library's records on stderr for ``closedloop COMMAND`` (replaces an earlier one)."""
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_CommandFormatter(command))
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
