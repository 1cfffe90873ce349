"""From a descriptor's links to one ordered path: endpoint, NF instances, endpoint.

DESIRE6G graphs list their links in any order, each joining two connection points; the path is
what the links form when followed head to tail. innet chains are single paths: a link that
branches, merges, loops or stands apart is refused, at that link.
"""
from __future__ import annotations

from dataclasses import dataclass

from controller.nsd.reader import At


@dataclass(frozen=True)
class Point:
    """A connection point resolved to the endpoint or NF instance it names."""
    name: str
    at: At


@dataclass(frozen=True)
class Link:
    tail: Point
    head: Point
    at: At


def chain(links: list[Link], graph: At) -> list[Point]:
    """The points in traversal order, from the first link's tail to the last link's head."""
    if not links:
        graph.fail("empty path: the graph has no links", hint="a forwarding graph needs at least one link")
    leaving: dict[str, Link] = {}
    entering: dict[str, Link] = {}
    for link in links:
        if link.tail.name == link.head.name:
            link.at.fail(f"the link joins '{link.tail.name}' to itself")
        for end, seen, verb in ((link.tail, leaving, "leaves"), (link.head, entering, "enters")):
            if end.name in seen:
                end.at.fail(f"a second link {verb} '{end.name}' (the first: {seen[end.name].at.path})",
                            hint="innet chains are single paths, without branches or merges")
            seen[end.name] = link
    starts = [link for link in links if link.tail.name not in entering]
    if not starts:
        names = " -> ".join(link.tail.name for link in _follow(links[0], leaving))
        graph.fail(f"the links form a cycle: {names} -> {links[0].tail.name}", hint="a path has two ends")
    path = list(_follow(starts[0], leaving))
    if len(path) < len(links):
        stray = next(link for link in links if link not in path)
        stray.at.fail(f"the link '{stray.tail.name}' -> '{stray.head.name}' is not on the path from "
                      f"'{starts[0].tail.name}' to '{path[-1].head.name}'",
                      hint="the links of one graph form one path, each starting where another ends")
    return [path[0].tail, *(link.head for link in path)]


def _follow(first: Link, leaving: dict[str, Link]):
    link = first
    visited = set()
    while link is not None and id(link) not in visited:
        visited.add(id(link))
        yield link
        link = leaving.get(link.head.name)


def split_ends(points: list[Point], endpoints: set[str]) -> tuple[Point, list[Point], Point]:
    """(source, NF hops, destination): the two ends are endpoints, every point between is an NF."""
    first, *middle, last = points
    for end, role in ((first, "starts"), (last, "ends")):
        if end.name not in endpoints:
            end.at.fail(f"the path {role} at NF instance '{end.name}'; it {role} at an endpoint",
                        hint="a forwarding graph runs from one application function to another")
    for point in middle:
        if point.name in endpoints:
            point.at.fail(f"the path passes through endpoint '{point.name}'; only NF instances sit between its ends")
    return first, middle, last


def ordered_path(points: list[Point], where: At, endpoints: set[str]) -> tuple[Point, list[Point], Point]:
    """split_ends for a path a descriptor lists in order (Smart-Orchestrator links, SOL006 NFPs)."""
    if len(points) < 2:
        where.fail(f"{len(points)} point(s) on the path; a path joins at least two endpoints")
    seen: dict[str, Point] = {}
    for point in points:
        if point.name in seen:
            point.at.fail(f"'{point.name}' is on the path twice (first at {seen[point.name].at.path})",
                          hint="a path visits each endpoint and NF instance once")
        seen[point.name] = point
    return split_ends(points, endpoints)
