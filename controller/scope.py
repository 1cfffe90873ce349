"""A state scope: where one testbed's control state lives, apart from every other testbed's.

A scope names a desired-state database, a bpffs pin root and a run directory (BMv2
sockets, logs, locks). Two testbeds, or a testbed and the test suite, in different scopes
never see each other's state. The scope comes from `INNET_SCOPE` (default "default"; the
CLI's `--scope` sets it), its directories from `INNET_HOME` (default /var/lib/innet),
`INNET_RUN` (default /run/innet) and `INNET_PIN_ROOT` (default /sys/fs/bpf/innet).
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from controller.errors import InnetError

DEFAULT = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


class ScopeError(InnetError):
    """A scope name is malformed, or the scope is held by another testbed."""


@dataclass(frozen=True)
class Scope:
    name: str

    @property
    def state_dir(self) -> Path:
        return Path(os.environ.get("INNET_HOME", "/var/lib/innet")) / self.name

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def run_dir(self) -> Path:
        return Path(os.environ.get("INNET_RUN", "/run/innet")) / self.name

    @property
    def pin_root(self) -> Path:
        return Path(os.environ.get("INNET_PIN_ROOT", "/sys/fs/bpf/innet")) / self.name

    def drop_empty_pin_root(self) -> None:
        if self.pin_root.is_dir() and not any(self.pin_root.iterdir()):
            self.pin_root.rmdir()

    def drop(self) -> None:
        """Remove the scope's database and run directory, and its pin root once empty (pins
        are the data plane's: they go with the instances, not here)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.drop_empty_pin_root()

    @contextmanager
    def writer_lock(self, timeout: float = 120.0) -> Iterator[None]:
        """Serialise writers of this scope across processes (flock: a killed holder releases it)."""
        with _flock(self.state_dir / "writer.lock", timeout, f"scope '{self.name}' writer lock"):
            yield

    def try_hold_testbed(self) -> int | None:
        """Take the scope's testbed lock for this process's life: an fd to keep open, or None
        when another live process holds it."""
        path = self.run_dir / "testbed.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return fd

    def testbed_held(self) -> bool:
        """Whether a live process holds this scope's testbed lock."""
        fd = self.try_hold_testbed()
        if fd is None:
            return True
        os.close(fd)
        return False


@contextmanager
def _flock(path: Path, timeout: float, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() > deadline:
                    raise ScopeError(f"timed out after {timeout:.0f} s waiting for the {what}",
                                     hint="another innet command is still running in this scope; wait for it, "
                                          "or find it with: fuser " + str(path)) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)   # releases the lock


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ScopeError(f"scope name {name!r} is not valid",
                         hint="use letters, digits, '.', '_' or '-' (up to 48 characters)")
    return name


def current() -> Scope:
    """The scope this process works in: $INNET_SCOPE, else 'default'."""
    return Scope(check_name(os.environ.get("INNET_SCOPE", DEFAULT)))
