"""`innet api` as a real process, for the tests that drive it from outside and bench/api.py."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
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
    stops it at the end, which must end it with status 0. Its output goes to a file (a pipe
    nobody reads would stall a server that logs much), shown when it fails."""
    url = f"http://127.0.0.1:{free_port()}"
    with tempfile.TemporaryFile("w+") as output:
        server = subprocess.Popen([sys.executable, "-m", "testbed.cli", "--scope", scope, "api", "--port",
                                   url.rsplit(":", 1)[1]], cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                                  text=True)

        def said() -> str:
            output.seek(0)
            return output.read()
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert server.poll() is None and time.monotonic() < deadline, said()
                    time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            assert server.wait(timeout=30) == 0, said()
