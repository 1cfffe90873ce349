"""The content hash that keys innet's compile caches (clang for eBPF, p4c for BMv2).

A build is reused only if the compiler's version, its flags, the -D defines and every
input file (name and bytes) are the same, so an edit anywhere recompiles and nothing else does.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from functools import lru_cache
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("INNET_CACHE", Path.home() / ".cache" / "innet"))


@lru_cache(maxsize=8)
def compiler_version(compiler: str) -> str:
    """`compiler --version`, asked once per process: a deploy of a cached build costs no subprocess."""
    return subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout


def inputs_digest(compiler: str, flags: list[str], defines: dict[str, int], files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(compiler_version(compiler).encode())
    h.update(repr(sorted(defines.items())).encode())
    h.update(repr(flags).encode())
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]
