"""Enter a network namespace on the calling thread, and come back.

`ip netns exec` remounts /sys and hides bpffs pins, so innet switches namespaces with
setns(2) instead: pins, map fds and program fds stay valid, while netlink sockets and
DEVMAP ifindexes resolve in the node's namespace.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import Iterator

from controller.errors import TopologyError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise TopologyError(f"cannot enter network namespace {what}: {os.strerror(err)}",
                            hint="run as root; check that the node is still running")


@contextmanager
def netns(path: str | None) -> Iterator[None]:
    """Run the body inside the namespace at `path` (None: stay where we are)."""
    if path is None:
        yield
        return
    try:
        target = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise TopologyError(f"network namespace {path} does not exist ({exc.strerror})",
                            hint="is the node (or its Mininet host) still up?") from exc
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)  # setns acts on this thread only
    try:
        _setns(target, path)
        try:
            yield
        finally:
            _setns(home, "of the controller")
    finally:
        os.close(target)
        os.close(home)

