"""Processes that tests start and must stop again, and pids that tests ask about.

Standard library only (no pytest, no third-party package): the benches import it too
(``bench/_common.py``), to stop their ``paramedic run`` the way the tests stop theirs.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists right now (one of another user's counts too).

    Used to tell the leftovers of a killed test session (its pid is gone) from those of a
    session still running on this machine. A pid may be reused, so a True is a "maybe".
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    return True


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> bool:
    """SIGTERM ``process`` and wait up to ``timeout`` s for it to exit; SIGKILL it if it has not.

    Returns True when it exited by itself within ``timeout`` (or had exited before the
    call: then nothing is sent), False when it had to be killed. Either way it has been
    reaped when this returns (``process.returncode`` is set); the wait after SIGKILL is
    bounded by 10 s (``subprocess.TimeoutExpired`` past that, which SIGKILL never needs).
    A process that is stopped (SIGSTOP) does not act on SIGTERM: send SIGCONT first.
    """
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return False
    return True
