"""Seeded Zipf flow traces for the heavy-hitter benchmark: flows, packet order, exact counts, frames.

A trace has `flows` distinct IPv4 5-tuples (TCP or UDP) and `packets` packets. Every flow
sends at least one packet, so the trace really holds that many flows; the other packets pick
their flow by a Zipf law of exponent `skew` over the flows' ranks (rank r with probability
proportional to r^-skew), in a random arrival order. Each flow has one frame length from the
simple IMIX (64, 594 and 1514 bytes in the ratio 7:4:1). Everything follows from `seed`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMIX_LENGTHS = np.array([64, 594, 1514])
IMIX_WEIGHTS = np.array([7, 4, 1]) / 12
TCP_SHARE = 0.8
ETH_HLEN, IPV4_HLEN = 14, 20
IP_OFF = ETH_HLEN
# offsets in the frame of the fields patched per flow
IP_TOT_LEN, IP_CSUM, IP_SRC, IP_DST = IP_OFF + 2, IP_OFF + 10, IP_OFF + 12, IP_OFF + 16
L4_OFF = ETH_HLEN + IPV4_HLEN
UDP_LEN = L4_OFF + 4
PROTO_TCP, PROTO_UDP = 6, 17


@dataclass(frozen=True)
class Trace:
    skew: float
    seed: int
    src: np.ndarray        # uint32, IPv4 address as an integer, per flow
    dst: np.ndarray        # uint32
    sport: np.ndarray      # uint16
    dport: np.ndarray      # uint16
    proto: np.ndarray      # uint8: 6 (TCP) or 17 (UDP)
    length: np.ndarray     # frame bytes, per flow
    order: np.ndarray      # flow index of each packet, in arrival order
    packets: np.ndarray    # exact packets per flow
    bytes: np.ndarray      # exact bytes per flow

    @property
    def flows(self) -> int:
        return len(self.src)

    def top(self, k: int) -> np.ndarray:
        """The k heaviest flows by exact packet count, heaviest first (ties: lower index first)."""
        return np.lexsort((np.arange(self.flows), -self.packets.astype(np.int64)))[:k]


def zipf_trace(skew: float, flows: int, packets: int, seed: int) -> Trace:
    if packets < flows:
        raise ValueError(f"a trace of {flows} flows needs at least as many packets, got {packets}")
    rng = np.random.default_rng([seed, int(round(skew * 1000))])
    src, dst, sport, dport, proto = _unique_tuples(rng, flows)
    weights = np.arange(1, flows + 1, dtype=np.float64) ** -skew
    rank_to_flow = rng.permutation(flows)   # rank 1 is a random flow, not flow 0
    extra = rank_to_flow[np.searchsorted(np.cumsum(weights / weights.sum()),
                                         rng.random(packets - flows), side="right").clip(max=flows - 1)]
    order = np.concatenate([np.arange(flows), extra]).astype(np.uint32)
    rng.shuffle(order)
    length = rng.choice(IMIX_LENGTHS, size=flows, p=IMIX_WEIGHTS).astype(np.uint16)
    counts = np.bincount(order, minlength=flows).astype(np.uint64)
    return Trace(skew, seed, src, dst, sport, dport, proto, length, order, counts,
                 counts * length.astype(np.uint64))


def _unique_tuples(rng: np.random.Generator, n: int):
    """n distinct random 5-tuples: sources in 10.0.0.0/8, destinations in 172.16.0.0/12."""
    src = (10 << 24) | rng.integers(0, 1 << 24, n, dtype=np.uint32)
    dst = (172 << 24 | 16 << 16) | rng.integers(0, 1 << 20, n, dtype=np.uint32)
    sport = rng.integers(1024, 65536, n, dtype=np.uint32).astype(np.uint16)
    dport = rng.choice(np.array([53, 80, 443, 8080, 5201], dtype=np.uint16), n)
    proto = np.where(rng.random(n) < TCP_SHARE, PROTO_TCP, PROTO_UDP).astype(np.uint8)
    while True:
        key = (src.astype(np.uint64) << 32 | dst) ^ (sport.astype(np.uint64) << 16 | dport) ^ proto
        _, first = np.unique(key, return_index=True)
        if len(first) == n:
            return src, dst, sport, dport, proto
        dup = np.setdiff1d(np.arange(n), first)   # redraw the source port of every repeat
        sport[dup] = rng.integers(1024, 65536, len(dup), dtype=np.uint32).astype(np.uint16)


@dataclass(frozen=True)
class Frames:
    """Every flow's frame, back to back in one buffer: flow i is buf[offset[i]:offset[i] + length[i]]."""
    buf: np.ndarray
    offset: np.ndarray
    length: np.ndarray


def _templates() -> dict[int, bytes]:
    """Ethernet/IPv4/TCP and /UDP headers built once by scapy; the per-flow fields are patched in."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return {PROTO_TCP: bytes(eth / IP(ttl=64) / TCP(flags="A")), PROTO_UDP: bytes(eth / IP(ttl=64) / UDP())}


def build_frames(trace: Trace) -> Frames:
    """Frames of each flow's length: template headers with addresses, ports, IP length and checksum
    patched in by numpy, zero payload."""
    length = trace.length.astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(length)[:-1]])
    buf = np.zeros(int(length.sum()), dtype=np.uint8)
    heads = {}
    for proto, head in _templates().items():
        mask = trace.proto == proto
        h = np.tile(np.frombuffer(head, dtype=np.uint8), (int(mask.sum()), 1))
        _put_be(h, IP_TOT_LEN, length[mask] - ETH_HLEN, 2)
        _put_be(h, IP_SRC, trace.src[mask], 4)
        _put_be(h, IP_DST, trace.dst[mask], 4)
        _put_be(h, L4_OFF, trace.sport[mask], 2)
        _put_be(h, L4_OFF + 2, trace.dport[mask], 2)
        if proto == PROTO_UDP:
            _put_be(h, UDP_LEN, length[mask] - L4_OFF, 2)
        _put_be(h, IP_CSUM, np.zeros(len(h), dtype=np.int64), 2)
        _put_be(h, IP_CSUM, _ipv4_checksum(h[:, IP_OFF:IP_OFF + IPV4_HLEN]), 2)
        heads[proto] = (np.flatnonzero(mask), h)
    for flows, h in heads.values():   # scatter every header to its frame's start
        cols = np.arange(h.shape[1])
        buf[(offset[flows][:, None] + cols).ravel()] = h.ravel()
    return Frames(buf, offset, trace.length)


def _put_be(rows: np.ndarray, at: int, values, size: int) -> None:
    values = np.asarray(values, dtype=np.int64)
    for i in range(size):
        rows[:, at + i] = (values >> (8 * (size - 1 - i))) & 0xFF


def _ipv4_checksum(headers: np.ndarray) -> np.ndarray:
    words = headers.astype(np.int64)[:, 0::2] << 8 | headers.astype(np.int64)[:, 1::2]
    s = words.sum(axis=1)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
