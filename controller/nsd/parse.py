"""parse_descriptor / load_descriptor: any supported descriptor -> one validated Service."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from controller.nsd import desire6g, smart_orchestrator, sol006
from controller.nsd.binding import bind_hosts
from controller.nsd.document import detect_format, read_document
from controller.nsd.errors import NSDError
from controller.nsd.model import Service

PARSERS = {
    smart_orchestrator.FORMAT: smart_orchestrator.parse,
    desire6g.FORMAT: desire6g.parse,
    sol006.FORMAT: sol006.parse,
}


def parse_descriptor(document: str | bytes | Mapping, *, bind: Mapping[str, str] | None = None,
                     nf_map: Mapping[str, str] | None = None) -> Service:
    """`document`: JSON or YAML text, or the mapping parsed from it; the format is read from it.

    bind: endpoint name -> testbed host, over what the descriptor says.
    nf_map: the descriptor's NF/VNFD id -> catalog NF, for ids the catalog does not know by name.
    Raises NSDError naming the place in the document and what is wrong there.
    """
    doc = read_document(document)
    draft = PARSERS[detect_format(doc)](doc, dict(nf_map or {}))
    return bind_hosts(draft.build(), bind or {})


def load_descriptor(path: str | Path, **options) -> Service:
    """parse_descriptor on a file; errors start with the file's name."""
    path = Path(path)
    try:
        return parse_descriptor(path.read_bytes(), **options)
    except OSError as exc:
        raise NSDError("", f"cannot read {path}: {exc.strerror}") from None
    except NSDError as exc:
        raise exc.in_source(str(path)) from None
