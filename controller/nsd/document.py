"""A descriptor's text (JSON or YAML) or parsed mapping, and which format it is in.

The format is read from the document's top-level keys, never from a file name: a descriptor
posted to the API has none, and the same JSON may come as a .yaml file.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import yaml

from controller.nsd.errors import NSDError
from controller.nsd.reader import At

# the top-level keys that mark each format
SIGNATURES = {
    "smart-orchestrator": ("applications", "net_services"),
    "desire6g-lnsd": ("lnsd",),
    "etsi-sol006": ("nsd", "etsi-nfv-nsd:nsd"),
}
# OSM's descriptors before SOL006 (Release SEVEN and older)
OSM_CATALOG_KEYS = ("nsd:nsd-catalog", "nsd-catalog")


def read_document(document: str | bytes | Mapping) -> At:
    if isinstance(document, Mapping):
        value = dict(document)
    else:
        text = _text(document)
        value = _json(text) if text.lstrip().startswith(("{", "[")) else _yaml(text)
    root = At(value)
    if value is None:
        root.fail("the document is empty")
    if not isinstance(value, dict):
        root.fail(f"a descriptor is a mapping at its top level, got a {type(value).__name__}")
    return root


def detect_format(doc: At) -> str:
    keys = set(doc.value)
    if keys & set(OSM_CATALOG_KEYS):
        doc.fail("OSM's pre-SOL006 descriptor (nsd-catalog) is not supported",
                 hint="convert it to ETSI SOL006 (nsd: nsd: [...]), as OSM itself requires since Release EIGHT")
    found = [fmt for fmt, marks in SIGNATURES.items() if keys & set(marks)]
    if len(found) > 1:
        doc.fail(f"the top-level keys mix formats: {' and '.join(found)}", hint="one descriptor per document")
    if not found:
        doc.fail(f"unknown descriptor format (top-level keys: {', '.join(map(str, keys)) or 'none'})",
                 hint="innet reads the Smart-Orchestrator descriptor (applications, net_services), "
                      "DESIRE6G local NSDs (lnsd) and ETSI SOL006 NSDs (nsd: nsd: [...])")
    if found == ["etsi-sol006"] and isinstance(doc.value.get("nsd"), dict) and "ns" in doc.value["nsd"]:
        doc.child("nsd").fail("a DESIRE6G-style 'ns' under 'nsd': DESIRE6G local NSDs start with 'lnsd:'",
                              hint="rename the top-level key to lnsd, or write an ETSI SOL006 'nsd: nsd: [...]'")
    return found[0]


def _text(document: str | bytes) -> str:
    if isinstance(document, bytes):
        try:
            return document.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NSDError("(document)", f"not UTF-8 text (byte {exc.start})") from None
    return document


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NSDError("(document)", f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _yaml(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise NSDError("(document)", f"not valid YAML: {where}{problem}") from None
