"""Send and capture real frames in a node's namespace through probe processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from controller.errors import InnetError
from controller.node import Node

REPO_ROOT = Path(__file__).resolve().parent.parent


def _probe(node: Node, *args: str) -> subprocess.Popen:
    cmd = ["nsenter", f"--net={node.netns}", sys.executable, "-m", "testbed.probe", *args]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _frames_json(frames: list[bytes]) -> str:
    return json.dumps({"frames": [bytes(f).hex() for f in frames]})


def _result(proc: subprocess.Popen, what: str, stdin: str | None = None, timeout: float = 60) -> dict:
    out, err = proc.communicate(stdin, timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise InnetError(f"{what} failed (exit {proc.returncode}): {err.strip()[-800:]}")
    return json.loads(lines[-1])


def send(node: Node, iface: str, frames: list[bytes]) -> int:
    """Send raw frames out of `iface` of `node`."""
    return _result(_probe(node, "send", iface), f"sending on {node.name}:{iface}", _frames_json(frames))["sent"]


class Capture:
    """Frames arriving at `iface` of `node` that pass a BPF filter, until count or timeout."""

    def __init__(self, node: Node, iface: str, bpf_filter: str, timeout: float = 3.0, count: int = 1 << 20,
                 send_frames: list[bytes] | None = None, absorb_udp: int | None = None):
        self.what = f"capturing on {node.name}:{iface}"
        args = ["capture", iface, bpf_filter, str(timeout), str(count)]
        if absorb_udp is not None:
            args += ["--absorb-udp", str(absorb_udp)]
        self._stdin = _frames_json(send_frames or [])
        self.proc = _probe(node, *args, "--send")
        self.proc.stdin.write(self._stdin)
        self.proc.stdin.close()
        ready = self.proc.stdout.readline().strip()
        if ready != "READY":
            raise InnetError(f"{self.what}: probe did not start: {self.proc.stderr.read()[-800:]}")

    def frames(self) -> list[bytes]:
        out = self.proc.stdout.read()
        err = self.proc.stderr.read()
        self.proc.wait(timeout=60)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise InnetError(f"{self.what} failed (exit {self.proc.returncode}): {err.strip()[-800:]}")
        return [bytes.fromhex(h) for h in json.loads(lines[-1])["frames"]]


def exchange(node: Node, iface: str, frames: list[bytes], bpf_filter: str, timeout: float = 2.0,
             count: int = 1 << 20) -> list[bytes]:
    """Send frames from `iface` and return what comes back through the filter."""
    return Capture(node, iface, bpf_filter, timeout, count, send_frames=frames).frames()
