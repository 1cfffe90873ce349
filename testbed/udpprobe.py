"""A sequence-numbered UDP probe: a paced sender, and a receiver that reports loss and order.

Run inside a host's namespace (Mininet's host.popen):

    python -m testbed.udpprobe send DST PORT --pps N --seconds S [--size B] [--sport P]
    python -m testbed.udpprobe receive PORT --seconds S      # one JSON line when done

Each datagram carries its sequence number and send time (wall clock, which every namespace
shares). The receiver prints what arrived: count, lost sequence numbers, how many arrived after
a higher one (reordered), and each packet's send and arrival time, so loss and reordering can
be put beside the moment a path changed.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

HEADER = struct.Struct("!Id")   # sequence number, send time


def send(dst: str, port: int, pps: float, seconds: float, size: int, sport: int) -> dict:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("", sport))
    padding = b"\0" * max(0, size - HEADER.size)
    gap, start = 1.0 / pps, time.monotonic()
    seq = 0
    while True:
        due = start + seq * gap
        now = time.monotonic()
        if due - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        sock.sendto(HEADER.pack(seq, time.time()) + padding, (dst, port))
        seq += 1
    return {"sent": seq}


def receive(port: int, seconds: float, idle: float = 1.0) -> dict:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("", port))
    print("READY", flush=True)
    deadline = time.monotonic() + seconds
    arrivals = []   # (seq, sent, received)
    while time.monotonic() < deadline:
        sock.settimeout(idle if arrivals else max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65535)
        except socket.timeout:
            if arrivals:
                break   # the sender is done
            continue
        seq, sent = HEADER.unpack_from(data)
        arrivals.append((seq, sent, time.time()))
    seen, highest, reordered, duplicates = set(), -1, 0, 0
    for seq, _, _ in arrivals:
        if seq in seen:
            duplicates += 1
            continue
        seen.add(seq)
        if seq < highest:
            reordered += 1
        highest = max(highest, seq)
    lost = sorted(set(range(highest + 1)) - seen)
    return {"received": len(seen), "highest": highest, "lost": lost, "reordered": reordered,
            "duplicates": duplicates, "arrivals": arrivals}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="udpprobe")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("dst")
    s.add_argument("port", type=int)
    s.add_argument("--pps", type=float, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--size", type=int, default=1000)
    s.add_argument("--sport", type=int, default=0)
    r = sub.add_parser("receive")
    r.add_argument("port", type=int)
    r.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    if args.mode == "send":
        result = send(args.dst, args.port, args.pps, args.seconds, args.size, args.sport)
    else:
        result = receive(args.port, args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
