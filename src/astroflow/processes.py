"""Whether a process still runs on this host: used to tell a killed job's leftovers (a temporary
store, a RUNNING MLflow run) from those of a job that is still working."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
