"""One epoch owner per watched heavy-hitter instance, so readers do not fight over epochs.

Closing a cms epoch is destructive (the bank is flipped, read and zeroed): two readers
each closing epochs would each get part of the traffic. So the API never closes one for a
reader: a FlowSampler thread per watched (node, instance) closes an interval every
`interval_s` with controller.stats.FlowMonitor and keeps the latest few; every reader gets
the latest, or, saying which one it has, the one after it (so a reader that polls loses no
interval to a slow answer). The first reader of an instance starts its sampler (and waits
for its first interval); a sampler nobody read for `idle_s` stops, so a local `innet hh`
can take the instance over again. Samplers started with keep=True (innet api --watch)
never stop.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from controller.api.errors import TooBusy
from controller.api.models import TopFlows
from controller.errors import InnetError
from controller.stats import FlowMonitor, Sample, top_k

log = logging.getLogger("innet.api")
EVERY_FLOW = 1 << 30   # a sampler keeps every flow of its interval; each reader ranks its own top k
HISTORY = 4            # intervals kept for readers that come back late


@dataclass(frozen=True)
class Interval:
    number: int    # counted from 1 since the sampler started
    ended: float   # Unix time
    sample: Sample


class FlowSampler:
    """The one owner of an instance's epochs while it runs: closes an interval every
    `interval_s` and keeps the last HISTORY."""

    def __init__(self, samplers: "FlowSamplers", node: str, instance: str, keep: bool):
        self.samplers, self.node, self.instance, self.keep = samplers, node, instance, keep
        self.monitor = FlowMonitor(samplers.controller, node, instance, k=EVERY_FLOW)   # refuses a non-hh NF
        self.intervals: deque[Interval] = deque(maxlen=HISTORY)
        self.error: Exception | None = None
        self.read_at = time.monotonic()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"flows {node}/{instance}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.monitor.start()
            while not self._stop.wait(self.samplers.interval_s):
                sample = self.monitor.sample()
                with self._changed:
                    number = self.latest.number + 1 if self.latest else 1
                    self.intervals.append(Interval(number, time.time(), sample))
                    self._changed.notify_all()
                if self.samplers.retire_if_idle(self):
                    return
        except Exception as exc:   # the instance went away, stopped answering, or a bug: tell the readers
            log.warning("flow sampler %s/%s stopped: %s", self.node, self.instance, exc,
                        exc_info=not isinstance(exc, InnetError))
            with self._changed:
                self.error = exc
                self._changed.notify_all()
            self.samplers.retire(self)
        finally:
            self.monitor.close()   # another reader may own the epochs now

    @property
    def latest(self) -> Interval | None:
        return self.intervals[-1] if self.intervals else None

    def wait(self, timeout: float, after: int | None = None) -> Interval:
        """The latest interval; with `after`, the one after interval number `after`, waited
        for if need be (when it is no longer kept, or the sampler restarted and counts from 1
        again, the latest: the gap in the numbers says so)."""
        def ready() -> bool:
            return self.error is not None or (self.latest is not None and self.latest.number != after)
        with self._changed:
            if not self._changed.wait_for(ready, timeout):
                raise TooBusy(f"no interval of {self.instance} on {self.node} closed within {timeout:.0f} s",
                              hint="try again; the instance's reads may be slow (see the API's log)")
            if self.error:
                raise self.error
            return next((i for i in self.intervals if after is not None and i.number == after + 1), self.latest)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class FlowSamplers:
    """The API's samplers, by (node, instance); at most `limit` at once (each one's top flows
    become labelled gauges in /metrics, so the limit bounds their series too)."""

    def __init__(self, controller, interval_s: float = 1.0, idle_s: float = 60.0, limit: int = 16):
        self.controller, self.interval_s, self.idle_s, self.limit = controller, interval_s, idle_s, limit
        self._samplers: dict[tuple[str, str], FlowSampler] = {}
        self._lock = threading.Lock()   # a reader's touch and a sampler's retirement exclude each other

    def watch(self, node: str, instance: str, keep: bool = False) -> FlowSampler:
        with self._lock:
            sampler = self._samplers.get((node, instance))
            if sampler is None:
                if len(self._samplers) >= self.limit:
                    raise TooBusy(f"{self.limit} instances are watched already",
                                  hint=f"unwatched samplers stop after {self.idle_s:.0f} s without a reader")
                sampler = self._samplers[node, instance] = FlowSampler(self, node, instance, keep)
            sampler.keep |= keep
            sampler.read_at = time.monotonic()
            return sampler

    def top(self, node: str, instance: str, k: int, by: str = "packets", after: int | None = None) -> TopFlows:
        """The top k flows of the instance's latest interval (see FlowSampler.wait for `after`)."""
        sampler = self.watch(node, instance)
        interval = sampler.wait(2 * self.interval_s + 30, after)
        return TopFlows.of(node, instance, interval.number, interval.ended, interval.sample,
                           top_k(interval.sample.flows, k, by))

    def latest(self) -> list[tuple[FlowSampler, Interval]]:
        with self._lock:
            samplers = list(self._samplers.values())
        return [(s, s.latest) for s in samplers if s.latest is not None]

    def retire_if_idle(self, sampler: FlowSampler) -> bool:
        with self._lock:
            if sampler.keep or time.monotonic() - sampler.read_at < self.idle_s:
                return False
            self._samplers.pop((sampler.node, sampler.instance), None)
            return True

    def retire(self, sampler: FlowSampler) -> None:
        with self._lock:
            if self._samplers.get((sampler.node, sampler.instance)) is sampler:
                del self._samplers[sampler.node, sampler.instance]

    def close(self) -> None:
        with self._lock:
            samplers, self._samplers = list(self._samplers.values()), {}
        for s in samplers:
            s.stop()
