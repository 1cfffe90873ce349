"""innet's errors: each says what was wrong, where, and what to do next."""
from __future__ import annotations

import re


class InnetError(Exception):
    """Base class. `hint` tells the user what to do next."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class CatalogError(InnetError):
    """An NF catalog entry is malformed or an NF is unknown."""


class TopologyError(InnetError):
    """A topology file is malformed, or names an unknown node or interface."""


class EntryError(InnetError):
    """A table entry does not fit its logical table (field, prefix, MAC, action...)."""


class QueueError(InnetError):
    """A queue configuration does not fit the link or the NF (levels, rates, ceilings)."""


class TargetError(InnetError):
    """A data-plane target failed to compile, load, attach or answer."""


class CompileError(TargetError):
    """The NF's program failed to compile; carries the compiler's trimmed output."""


class BpfError(TargetError):
    def __init__(self, message: str, errno: int | None = None, hint: str | None = None):
        if hint is None and errno == 1:  # EPERM
            hint = "run as root (CAP_BPF and CAP_NET_ADMIN are needed)"
        super().__init__(message, hint)
        self.errno = errno


class VerifierError(BpfError):
    """The kernel verifier rejected a program; keeps the relevant lines of its log."""

    CONTEXT_LINES = 12

    def __init__(self, path: str, logs: dict[str, str], errno: int | None = None):
        self.logs = logs
        parts = []
        for prog, text in logs.items():
            parts.append(f"program '{prog}':\n" + "\n".join("    " + ln for ln in self.relevant_lines(text)))
        super().__init__(f"the kernel verifier rejected {path}:\n" + "\n".join(parts), errno=errno,
                         hint="fix the program where the log points; the full log is in VerifierError.logs")

    @classmethod
    def relevant_lines(cls, text: str) -> list[str]:
        """The last instructions before the verifier's complaint, and the complaint itself."""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        stop = len(lines)
        for i, ln in enumerate(lines):
            if re.match(r"processed \d+ insns", ln):
                stop = i
                break
        return lines[max(0, stop - cls.CONTEXT_LINES):stop + 1]


class StatsError(InnetError):
    """A flow-statistics request does not fit the NF or its data (k, threshold, epoch...)."""
