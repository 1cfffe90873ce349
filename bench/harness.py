"""What every benchmark script shares: printing, the opening lines, clean unwinding.
Throwaway namespaces joined by veth pairs come from testbed.scratch.

A script starts with `start` (root check, the command that reproduces the run, the machine)
and runs its body through `run`, so a SIGTERM unwinds like Ctrl-C and every namespace,
switch and testbed the body opened is torn down by its own `finally`.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


def say(msg: str = "") -> None:
    print(msg, flush=True)


def start(script: str, argv: list[str] | None, quick: bool, needs: str, detail: str = "") -> bool:
    """Set up logging; False (having said why) unless run as root; else print the command that
    reproduces this run and the machine it runs on. `script` is the caller's __file__, `needs`
    what root is for, `detail` the rest of the machine line."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    name = Path(script).resolve().relative_to(REPO).as_posix()
    if os.geteuid() != 0:
        say(f"{name} needs root ({needs})")
        return False
    given = sys.argv[1:] if argv is None else argv
    say(f"reproduce: cd {REPO} && sudo {' '.join(shlex.quote(a) for a in ['.venv/bin/python', name, *given])}")
    say(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {'quick' if quick else 'full'} run"
        + (f", {detail}" if detail else ""))
    return True


def run(body: Callable[[], None]) -> int:
    """Run the benchmark's body and say how long it took; the exit status. A SIGTERM unwinds
    like Ctrl-C, so the body's namespaces, switches and testbeds are still torn down."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    t0 = time.perf_counter()
    try:
        body()
    except KeyboardInterrupt:
        say("\n[bench] interrupted")
        return 130
    say(f"done in {time.perf_counter() - t0:.0f} s")
    return 0

