"""Link load for GET /topology: the routers' interface counters sampled over time.

A rate needs two readings some time apart, and every reader should see the same one, so a
LinkLoad thread reads the byte and packet counters of every router's interfaces
(controller.ifstats) every `interval_s` and keeps the rates of the latest interval. The
first reader starts it and waits for its first interval; nobody reading for `idle_s` stops
it (an idle API reads nothing).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from controller.api.errors import TooBusy
from controller.errors import InnetError
from controller.ifstats import InterfaceCounters, interface_counters

log = logging.getLogger("innet.api")


@dataclass(frozen=True)
class Rate:
    rx_bits_per_s: float
    tx_bits_per_s: float
    rx_packets_per_s: float
    tx_packets_per_s: float
    rx_bytes: int   # the counters at the interval's end
    tx_bytes: int


@dataclass(frozen=True)
class LoadInterval:
    number: int      # counted from 1 since the sampler started
    ended: float     # Unix time
    duration: float  # seconds
    rates: dict[tuple[str, str], Rate] = field(default_factory=dict)   # (node, interface) -> rate


class LinkLoad:
    def __init__(self, controller, interval_s: float = 1.0, idle_s: float = 60.0):
        self.controller, self.interval_s, self.idle_s = controller, interval_s, idle_s
        self._latest: LoadInterval | None = None
        self._read_at = 0.0
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()

    def latest(self) -> LoadInterval:
        """The rates of the latest closed interval (the first reader waits for one)."""
        with self._changed:
            self._read_at = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._latest = None
                self._thread = threading.Thread(target=self._run, name="link load", daemon=True)
                self._thread.start()
            timeout = 2 * self.interval_s + 10
            if not self._changed.wait_for(lambda: self._latest is not None, timeout):
                raise TooBusy(f"no link load interval closed within {timeout:.0f} s",
                              hint="try again; the routers' counters may be slow to read (see the API's log)")
            return self._latest

    def _read(self) -> tuple[float, dict[tuple[str, str], InterfaceCounters]]:
        now, counters = time.monotonic(), {}
        for node in list(self.controller.nodes.values()):
            if node.role != "router":
                continue
            try:
                counters.update({(node.name, name): c for name, c in interface_counters(node).items()})
            except Exception as exc:   # a node gone: its links show no load, the others do
                log.warning("link load: cannot read %s: %s", node.name, getattr(exc, "message", exc),
                            exc_info=not isinstance(exc, InnetError))
        return now, counters

    def _run(self) -> None:
        started, before = self._read()
        number = 0
        while not self._stop.wait(self.interval_s):
            ended, now = self._read()
            seconds = ended - started
            rates = {}
            for key, c in now.items():
                b = before.get(key)
                if b is None or c.rx_bytes < b.rx_bytes or c.tx_bytes < b.tx_bytes:   # new, or recreated
                    continue
                rates[key] = Rate(8 * (c.rx_bytes - b.rx_bytes) / seconds, 8 * (c.tx_bytes - b.tx_bytes) / seconds,
                                  (c.rx_packets - b.rx_packets) / seconds, (c.tx_packets - b.tx_packets) / seconds,
                                  c.rx_bytes, c.tx_bytes)
            number += 1
            with self._changed:
                self._latest = LoadInterval(number, time.time(), seconds, rates)
                self._changed.notify_all()
                if time.monotonic() - self._read_at > self.idle_s:
                    self._thread = None
                    return
            started, before = ended, now

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
