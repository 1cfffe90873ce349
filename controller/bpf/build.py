"""Compile eBPF C with clang, cached by content hash (sources, headers, flags, compiler)."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from controller.errors import CompileError

log = logging.getLogger("innet.build")

EBPF_DIR = Path(__file__).resolve().parents[2] / "ebpf"
CACHE_DIR = Path(os.environ.get("INNET_CACHE", Path.home() / ".cache" / "innet")) / "xdp"
CFLAGS = ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]
MAX_ERROR_LINES = 20


def _clang() -> str:
    clang = shutil.which("clang")
    if not clang:
        raise CompileError("clang is not installed", hint="run `make setup` (installs clang, llvm, libbpf-dev)")
    return clang


def _inputs_digest(source: Path, defines: dict[str, int], clang: str) -> str:
    h = hashlib.sha256()
    version = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout
    h.update(version.encode())
    h.update(repr(sorted(defines.items())).encode())
    h.update(repr(CFLAGS).encode())
    for path in [source, *sorted((EBPF_DIR / "include").glob("*.h"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def compile_program(source: str | Path, defines: dict[str, int] | None = None) -> Path:
    """The path of the compiled object for `source`; compiled only if not cached."""
    source = Path(source)
    if not source.is_absolute():
        source = EBPF_DIR.parent / source
    if not source.exists():
        raise CompileError(f"eBPF source {source} does not exist", hint="check the NF catalog's programs.xdp.source")
    defines = defines or {}
    clang = _clang()
    digest = _inputs_digest(source, defines, clang)
    obj = CACHE_DIR / f"{source.stem.replace('.bpf', '')}-{digest}.o"
    if obj.exists():
        return obj
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_suffix(f".tmp{os.getpid()}")
    cmd = [clang, *CFLAGS, *(f"-D{k}={v}" for k, v in sorted(defines.items())), "-c", str(source), "-o", str(tmp)]
    log.info("compiling %s", source.name)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln] or lines
        shown = "\n".join("    " + ln for ln in errors[:MAX_ERROR_LINES])
        raise CompileError(f"clang failed to compile {source}:\n{shown}",
                           hint=f"fix the source; full command: {' '.join(cmd)}")
    tmp.rename(obj)
    return obj
