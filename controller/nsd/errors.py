"""NSDError: what is wrong in a network service descriptor, and where in the document."""
from __future__ import annotations

from controller.errors import InnetError


def format_path(parts: tuple | list) -> str:
    """('lnsd', 'ns', 'links', 1, 'id') -> 'lnsd.ns.links[1].id', the way the errors name places."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class NSDError(InnetError):
    """One line: `[source: ]where: problem`, and a hint.

    `where` is a path in the descriptor as its author wrote it (keys and list indices), so the
    author can find the place without knowing innet's model.
    """

    def __init__(self, where: str, problem: str, hint: str | None = None, source: str | None = None):
        self.where, self.problem, self.source = where, problem, source
        super().__init__(": ".join(p for p in (source, where, problem) if p), hint)

    def in_source(self, source: str) -> "NSDError":
        return NSDError(self.where, self.problem, self.hint, source)


class ModelError(NSDError):
    """A service model broke one of its rules; `loc` is the place in the model.

    Not a ValueError on purpose: pydantic lets it through unwrapped, so a parser can turn `loc`
    back into the path in its document (controller.nsd.draft).
    """

    def __init__(self, loc: tuple, problem: str, hint: str | None = None):
        self.loc = loc
        super().__init__(format_path(loc), problem, hint)
