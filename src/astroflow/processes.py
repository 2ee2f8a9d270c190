"""Process and thread helpers: whether a process still runs on this host (to tell a killed job's
leftovers, a temporary store or a RUNNING MLflow run, from those of a job still working), and
a background thread's CPU priority."""

from __future__ import annotations

import os
import sys
import threading


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lower_thread_priority() -> None:
    """Give the calling thread the lowest CPU priority, so it runs on cores the job's workers
    leave idle instead of slowing them (Linux: a thread's own nice value; elsewhere nothing).

    The priority cannot be raised again without privileges: use a thread of its own.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:  # a sandbox may refuse; the work runs at normal priority
        pass
