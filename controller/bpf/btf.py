"""Struct and enum layouts from an object's BTF, as bpftool reports them.

The XDP target encodes logical table entries by field *name*: offsets and sizes come from
the program's own BTF, so C structs and the catalog cannot silently drift apart.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from controller.errors import TargetError


@dataclass(frozen=True)
class Member:
    name: str
    offset: int   # bytes
    size: int     # bytes


@lru_cache(maxsize=64)
def _types(obj: Path) -> dict[int, dict]:
    try:
        out = subprocess.run(["bpftool", "btf", "dump", "file", str(obj), "format", "raw", "-j"],
                             capture_output=True, text=True, check=True).stdout
    except FileNotFoundError as exc:
        raise TargetError("bpftool is not installed", hint="run `make setup`") from exc
    except subprocess.CalledProcessError as exc:
        raise TargetError(f"bpftool cannot read the BTF of {obj}: {exc.stderr.strip()}",
                          hint="compile with -g so the object carries BTF") from exc
    return {t["id"]: t for t in json.loads(out)["types"]}


class Btf:
    def __init__(self, obj: Path):
        self.types = _types(Path(obj))

    def _resolve(self, type_id: int) -> dict:
        t = self.types[type_id]
        while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"):
            t = self.types[t["type_id"]]
        return t

    def size_of(self, type_id: int) -> int:
        t = self._resolve(type_id)
        if t["kind"] == "ARRAY":
            return t["nr_elems"] * self.size_of(t["type_id"])
        return t["size"]

    def name_of(self, type_id: int) -> str:
        return self._resolve(type_id).get("name", "")

    def members(self, type_id: int) -> dict[str, Member]:
        t = self._resolve(type_id)
        if t["kind"] != "STRUCT":
            return {}
        return {m["name"]: Member(m["name"], m["bits_offset"] // 8, self.size_of(m["type_id"]))
                for m in t["members"]}

    def enum(self, name: str) -> dict[str, int]:
        for t in self.types.values():
            if t["kind"] in ("ENUM", "ENUM64") and t.get("name") == name:
                return {v["name"]: v["val"] for v in t["values"]}
        raise TargetError(f"the program declares no enum '{name}'")
