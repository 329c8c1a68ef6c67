"""Errors that end a command with a documented exit code (../shared/CONTRACTS.md).

Raise these with one or two plain sentences that name the problem, the bad value and
what is accepted; the CLI prints the message to stderr and exits with ``exit_code``.
"""

from __future__ import annotations


class ClosedLoopError(Exception):
    """Any failure a user should read as a sentence, not a traceback (exit 1).

    The base of every error closedloop raises on purpose; ``exit_code`` is the command line's.
    """

    exit_code = 1


class UsageError(ClosedLoopError):
    """Bad usage: an option or argument out of range, or a call that does not fit (exit 2)."""

    exit_code = 2


class ProtocolError(UsageError):
    """An invalid protocol file or preset: the message names the file, key, value and what is
    accepted (exit 2)."""

    exit_code = 2


class DataError(ClosedLoopError):
    """Bad input data: unreadable recording, missing channel, unusable rate (exit 3)."""

    exit_code = 3


class StreamError(ClosedLoopError):
    """An LSL stream that cannot be found, is ambiguous, or was lost beyond recovery (exit 4)."""

    exit_code = 4
