"""Compile eBPF C with clang, cached by content hash (sources, headers, flags, compiler)."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from controller.buildcache import CACHE_ROOT, inputs_digest
from controller.errors import CompileError

log = logging.getLogger("innet.build")

EBPF_DIR = Path(__file__).resolve().parents[2] / "ebpf"
CACHE_DIR = CACHE_ROOT / "xdp"
CFLAGS = ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu"]
MAX_ERROR_LINES = 20


def _clang() -> str:
    clang = shutil.which("clang")
    if not clang:
        raise CompileError("clang is not installed", hint="run `make setup` (installs clang, llvm, libbpf-dev)")
    return clang


def compile_program(source: str | Path, defines: dict[str, int] | None = None) -> Path:
    """The path of the compiled object for `source`; compiled only if not cached."""
    source = Path(source)
    if not source.is_absolute():
        source = EBPF_DIR.parent / source
    if not source.exists():
        raise CompileError(f"eBPF source {source} does not exist", hint="check the NF catalog's programs.xdp.source")
    defines = defines or {}
    clang = _clang()
    digest = inputs_digest(clang, CFLAGS, defines, [source, *sorted((EBPF_DIR / "include").glob("*.h"))])
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
