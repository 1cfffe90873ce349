"""A service as a parser read it, before the model has checked it.

The parser fills plain data for the model and notes, for each part, the path in the document it
came from. When the model refuses the data (pydantic's ValidationError, or a ModelError of its
own rules), the place in the model is turned back into that path: the author reads
`lnsd.ns.network-functions[1].id: unknown NF type ...`, not innet's field names.
"""
from __future__ import annotations

from pydantic import ValidationError

from controller.nsd.errors import ModelError, NSDError, format_path
from controller.nsd.model import NAMED_SECTIONS, Service, name_taken
from controller.nsd.paths import Point
from controller.nsd.reader import At


class Draft:
    def __init__(self, fmt: str, name: At):
        self.data: dict = {"format": fmt, "name": name.value, "endpoints": [], "nf_instances": [],
                           "forwarding_graphs": []}
        self.origins: dict[tuple, tuple] = {("name",): name.parts}

    def names(self, section: str) -> list[str]:
        return [item["name"] for item in self.data[section]]

    def add(self, section: str, at: At, fields: dict, keys: dict[str, At | None]) -> int:
        """Appends one endpoint, NF instance or graph read at `at`; `keys` says where each field was."""
        index = len(self.data[section])
        self.origins[(section, index)] = at.parts
        for field, found in keys.items():
            if found is not None:
                self.origins[(section, index, field)] = found.parts
        # a name taken twice is told now, before the parser resolves references by name
        if section in NAMED_SECTIONS:
            holder = next((s for s in NAMED_SECTIONS if fields["name"] in self.names(s)), None)
            if holder is not None:
                raise self._translated(name_taken((section, index, "name"), fields["name"], holder))
        self.data[section].append(fields)
        return index

    def add_graph(self, at: At, name: At, path: tuple[Point, list[Point], Point], fields: dict[str, At | None],
                  classifier: dict[str, At] | None = None) -> None:
        """One forwarding graph: `path` is (source, NF hops, destination), `fields` and `classifier`
        map model fields to the values read for them."""
        source, hops, destination = path
        data = {"name": name.name(), "source": source.name, "destination": destination.name,
                "hops": [hop.name for hop in hops]}
        data.update({field: found.value for field, found in fields.items() if found is not None})
        if classifier:
            data["classifier"] = {field: found.value for field, found in classifier.items()}
        index = self.add("forwarding_graphs", at, data,
                         {"name": name, "source": source.at, "destination": destination.at, **fields})
        graph = ("forwarding_graphs", index)
        for h_index, hop in enumerate(hops):
            self.note((*graph, "hops", h_index), hop.at)
        for field, found in (classifier or {}).items():
            self.note((*graph, "classifier", field), found)

    def note(self, loc: tuple, at: At) -> None:
        """Where a finer part of the model came from (a hop, one address of several)."""
        self.origins[loc] = at.parts

    def build(self) -> Service:
        try:
            return Service.model_validate(self.data)
        except ValidationError as exc:
            first = exc.errors()[0]
            problem = first["msg"].removeprefix("Value error, ")
            if first["type"] not in ("value_error", "missing") and not isinstance(first["input"], (dict, list)):
                problem += f" (got {first['input']!r})"
            raise NSDError(self._path(first["loc"]), problem) from None
        except ModelError as exc:
            raise self._translated(exc) from None

    def _translated(self, error: ModelError) -> NSDError:
        return NSDError(self._path(error.loc), error.problem, error.hint)

    def _path(self, loc: tuple) -> str:
        # the longest part of `loc` the parser noted, then the rest as the model names it
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in self.origins:
                return format_path((*self.origins[loc[:cut]], *loc[cut:]))
        return format_path(loc)
