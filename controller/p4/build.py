"""Compile P4_16 (v1model) with p4c for BMv2, cached by content hash.

The key covers the program, every .p4 beside it (the composed p4/innet.p4 #includes the NFs'
programs) and under its directory's include/, the -D defines and the compiler's version, so an
edit anywhere recompiles and nothing else does. Outputs, per build:
<cache>/<name>-<digest>/<name>.json (BMv2's pipeline) and <name>.p4info.txtpb (P4Runtime's).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from controller.buildcache import CACHE_ROOT, inputs_digest
from controller.errors import CompileError

log = logging.getLogger("innet.p4build")

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = CACHE_ROOT / "p4"
P4_HOME = Path(os.environ.get("INNET_P4_HOME", "/opt/p4"))   # where p4c/BMv2 are built (not a package)
P4C_FLAGS = ["--target", "bmv2", "--arch", "v1model"]
MAX_ERROR_LINES = 20
CONTEXT_LINES = 3   # source lines p4c prints under each error (the line and its caret)


@dataclass(frozen=True)
class P4Build:
    json: Path      # BMv2 device config
    p4info: Path    # P4Runtime p4info, text format


def find_tool(name: str) -> str | None:
    """A p4c/BMv2 executable on PATH, or else in /opt/p4/bin (INNET_P4_HOME)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = P4_HOME / "bin" / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


def p4c() -> str:
    tool = find_tool("p4c")
    if not tool:
        raise CompileError(f"p4c not found on PATH or in {P4_HOME}/bin",
                           hint="build p4c and BMv2 into /opt/p4 (see the README's P4 toolchain section) or put them on PATH")
    return tool


def relevant_errors(stderr: str) -> list[str]:
    """p4c's error and warning lines with the source excerpt each one prints below it."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    shown: list[str] = []
    for i, ln in enumerate(lines):
        if re.search(r"\b(error|Error|ERROR)\b", ln):
            shown.extend(ln2 for ln2 in lines[i:i + CONTEXT_LINES] if ln2 not in shown[-CONTEXT_LINES:])
    return (shown or lines)[:MAX_ERROR_LINES]


def compile_p4(source: str | Path, defines: dict[str, int] | None = None) -> P4Build:
    """The BMv2 JSON and p4info of `source` (relative paths: from the repository root)."""
    source = Path(source)
    if not source.is_absolute():
        source = REPO_ROOT / source
    if not source.exists():
        raise CompileError(f"P4 source {source} does not exist", hint="check the NF catalog's programs.bmv2.source")
    defines = defines or {}
    compiler = p4c()
    sources = sorted({source, *source.parent.glob("*.p4"), *(source.parent / "include").glob("*.p4")})
    digest = inputs_digest(compiler, P4C_FLAGS, defines, sources)
    out = CACHE_DIR / f"{source.stem}-{digest}"
    build = P4Build(out / f"{source.stem}.json", out / f"{source.stem}.p4info.txtpb")
    if build.json.exists() and build.p4info.exists():
        return build
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, *P4C_FLAGS, *(f"-D{k}={v}" for k, v in sorted(defines.items())),
           "--p4runtime-files", str(tmp / build.p4info.name), "-o", str(tmp), str(source)]
    log.info("compiling %s with p4c", source.name)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        shown = "\n".join("    " + ln for ln in relevant_errors(res.stderr + res.stdout))
        raise CompileError(f"p4c failed to compile {source}:\n{shown}",
                           hint=f"fix the program; full command: {' '.join(cmd)}")
    try:
        tmp.rename(out)   # atomic: a concurrent build of the same inputs may have won
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return build
