"""Real-time scheduling for the live loop (``closedloop run --realtime``).

On a shared machine the loop's tail latency is set by whatever else runs: a compiler, a browser, a
second analysis. Under Linux's ``SCHED_FIFO`` policy a runnable loop thread preempts every
ordinary process at once, so the percentiles stay where the loop itself puts them. The policy is
requested for the calling thread before the inlet is opened, so that liblsl's receiving threads
(created afterwards) inherit it; threads that do background work (recorder flushes, the
monitor) step one priority below the loop with :func:`background`; the estimator's fit, a heavy
one-off computation, returns to normal priority with :func:`normal`. Memory is locked
(``mlockall``) so that no page fault lands in the loop.

The kernel's real-time throttling (``/proc/sys/kernel/sched_rt_runtime_us``, 95 % by default)
keeps a runaway real-time thread from freezing the machine. Without the privilege (not root, no
``CAP_SYS_NICE``, no ``rtprio`` limit) the request is refused and the session runs at normal
priority, with a note saying how to grant it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass, field

#: SCHED_FIFO priority of the loop: above ordinary and most kernel threads, below the kernel's
#: own real-time housekeeping (which runs at 99).
DEFAULT_PRIORITY = 70
#: Memory the loop may need locked before locking it all is safe.
MIN_MEMLOCK_BYTES = 1 << 30
_MCL_CURRENT = 1
_MCL_FUTURE = 2

GRANT_HINT = (
    "grant it with `sudo setcap cap_sys_nice,cap_ipc_lock+ep $(readlink -f $(which python))`, or an "
    "`rtprio 99` and `memlock unlimited` line for your user in /etc/security/limits.conf"
)


@dataclass
class RealtimeStatus:
    """What the system granted."""

    requested: bool = False
    fifo: bool = False
    priority: int = 0
    memory_locked: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "requested": self.requested,
            "fifo": self.fifo,
            "priority": self.priority,
            "memory_locked": self.memory_locked,
            "notes": list(self.notes),
        }


def request(priority: int = DEFAULT_PRIORITY, *, lock_memory: bool = True) -> RealtimeStatus:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority`` and lock the process's memory.

    Parameters
    ----------
    priority : int
        1-98; the loop's real-time priority.
    lock_memory : bool
        Also ``mlockall(MCL_CURRENT | MCL_FUTURE)``.

    Returns
    -------
    RealtimeStatus
        What was granted; refusals are described in ``notes``, never raised.
    """
    if not 1 <= int(priority) <= 98:
        raise ValueError(f"real-time priority must be between 1 and 98, got {priority}.")
    status = RealtimeStatus(requested=True)
    if not sys.platform.startswith("linux") or not hasattr(os, "SCHED_FIFO"):
        status.notes.append(f"real-time scheduling is implemented for Linux only (this is {sys.platform}); running at normal priority")
        return status
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
        status.fifo = True
        status.priority = int(priority)
    except PermissionError:
        status.notes.append(f"real-time scheduling was refused (no permission); running at normal priority; {GRANT_HINT}")
    except OSError as exc:
        status.notes.append(f"real-time scheduling failed ({exc}); running at normal priority")
    if lock_memory and not _memlock_allows(MIN_MEMLOCK_BYTES):
        # with MCL_FUTURE every later allocation counts against the limit and fails beyond it
        status.notes.append(
            "memory was not locked: the memlock limit is below 1 GiB, and allocations beyond it would fail"
        )
    elif lock_memory:
        libc_name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) == 0:
                status.memory_locked = True
            else:
                err = ctypes.get_errno()
                status.notes.append(f"memory could not be locked ({os.strerror(err)}); page faults may add latency")
        except (OSError, AttributeError) as exc:
            status.notes.append(f"memory could not be locked ({exc})")
    return status


def _memlock_allows(n_bytes: int) -> bool:
    try:
        import resource
    except ImportError:
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return soft == resource.RLIM_INFINITY or soft >= n_bytes or os.geteuid() == 0


def normal() -> None:
    """Return the calling thread to the normal policy (for heavy one-off work such as a fit).

    A long computation under ``SCHED_FIFO`` would hold one of the cores, and with it the GIL,
    against everything else; at normal priority it takes what is free.
    """
    if not hasattr(os, "sched_getscheduler"):
        return
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass


def background() -> None:
    """Put a light helper thread of a real-time loop one priority step below the loop.

    Light helper threads (recorder, XDF flushes, the monitor) stay under ``SCHED_FIFO``:
    a helper at normal priority can be preempted by any other program while it holds Python's
    GIL, and the loop then waits for the GIL for a whole time slice (tens of milliseconds were
    measured with the machine loaded). One step lower, they never preempt the loop itself.
    Does nothing when the calling thread is not real-time.
    """
    if not hasattr(os, "sched_getscheduler"):
        return
    try:
        if os.sched_getscheduler(0) != os.SCHED_FIFO:
            return
        priority = os.sched_getparam(0).sched_priority
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(max(1, priority - 1)))
    except OSError:
        pass
