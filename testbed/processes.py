"""Ending the processes a testbed script started, by their own handles."""
from __future__ import annotations

import subprocess


def end(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM `proc` if it still runs, and wait; SIGKILL it if it does not end in `timeout` s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
