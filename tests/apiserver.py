"""`innet api` as a real process, for the tests that drive it from outside."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_api(scope: str) -> Iterator[str]:
    """`innet api` of `scope` on a free loopback port, answering /healthz: its URL. A SIGTERM
    stops it at the end, which must end it with status 0."""
    url = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen([sys.executable, "-m", "testbed.cli", "--scope", scope, "api", "--port",
                               url.rsplit(":", 1)[1]], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0, server.stderr.read()
