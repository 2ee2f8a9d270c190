"""astroflow.processes: whether a pid lives, and a background thread's CPU priority."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from astroflow.processes import lower_thread_priority, pid_alive


def test_pid_alive_tells_a_running_process_from_a_finished_one():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    assert pid_alive(os.getpid()) and pid_alive(child.pid)
    child.communicate(b"")
    assert not pid_alive(child.pid)


def _thread_nice() -> int:
    """The calling thread's own nice value (field 19 of its /proc stat line)."""
    stat = Path(f"/proc/self/task/{threading.get_native_id()}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice: Linux")
def test_lower_thread_priority_lowers_only_the_calling_thread():
    before = _thread_nice()
    with ThreadPoolExecutor(max_workers=1, initializer=lower_thread_priority) as idle:
        assert idle.submit(_thread_nice).result() == 19
    assert _thread_nice() == before
