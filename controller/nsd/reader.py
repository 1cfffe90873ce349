"""Walking a parsed descriptor with its path at hand, so every complaint says where."""
from __future__ import annotations

from typing import Any, NoReturn

from controller.nsd.errors import NSDError, format_path


class At:
    """A value found in the descriptor, and the path that leads to it."""

    __slots__ = ("value", "parts")

    def __init__(self, value: Any, parts: tuple = ()):
        self.value, self.parts = value, parts

    @property
    def path(self) -> str:
        return format_path(self.parts) or "(document)"

    def fail(self, problem: str, hint: str | None = None) -> NoReturn:
        raise NSDError(self.path, problem, hint)

    def child(self, key: str | int) -> "At":
        return At(self.value[key], (*self.parts, key))

    def mapping(self) -> "At":
        if not isinstance(self.value, dict):
            self.fail(f"expected a mapping of keys to values, got {_kind(self.value)}")
        return self

    def field(self, *keys: str, required: bool = True) -> "At | None":
        """The first of `keys` present (descriptor generations spell one field differently)."""
        self.mapping()
        for key in keys:
            if key in self.value and self.value[key] is not None:
                return self.child(key)
        if required:
            self.fail(f"missing '{keys[0]}'" + (f" (or {', '.join(repr(k) for k in keys[1:])})" if keys[1:] else ""))
        return None

    def value_of(self, *keys: str, default: Any = None) -> Any:
        """A leaf handed to the model as it is, for the model to check."""
        found = self.field(*keys, required=False)
        return default if found is None else found.value

    def items(self, *keys: str, required: bool = False) -> list["At"]:
        """The elements of the list under the first of `keys` present; none when it is absent."""
        found = self.field(*keys, required=required)
        if found is None:
            return []
        if not isinstance(found.value, list):
            found.fail(f"expected a list, got {_kind(found.value)}")
        return [found.child(i) for i in range(len(found.value))]

    def name(self) -> str:
        """An identifier: text, or a number YAML read from an unquoted id."""
        value = self.value
        if isinstance(value, bool):
            self.fail(f"expected a name, got {value} (YAML reads unquoted yes/no/on/off as booleans)",
                      hint="quote the name")
        if isinstance(value, int):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            self.fail(f"expected a name, got {_kind(value)}")
        return value.strip()

    def reference(self) -> str:
        """A '<name>:<something>' reference; it must be text."""
        if isinstance(self.value, int) and not isinstance(self.value, bool):
            self.fail(f"expected a reference like 'name:1', got the number {self.value}",
                      hint="quote it: YAML reads an unquoted 1:1 as a base-60 number")
        if not isinstance(self.value, str):
            self.fail(f"expected a reference like 'name:1', got {_kind(self.value)}")
        return self.value.strip()


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return "a list" if isinstance(value, list) else "a mapping"
    return f"{type(value).__name__} {value!r}"
