"""The content hash that keys innet's compile caches (clang for eBPF, p4c for BMv2).

A build is reused only if the compiler's version, its flags, the -D defines and every
input file (name and bytes) are the same, so an edit anywhere recompiles and nothing else does.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("INNET_CACHE", Path.home() / ".cache" / "innet"))


def inputs_digest(compiler: str, flags: list[str], defines: dict[str, int], files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.encode())
    h.update(repr(sorted(defines.items())).encode())
    h.update(repr(flags).encode())
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]
