"""Packet probe run inside a node's namespace: send frames, capture frames, as JSON.

Scapy binds to the namespace it is imported in, so each probe is its own process,
started in the node's namespace (see testbed.traffic), importing scapy only there.

    python -m testbed.probe send IFACE            < {"frames": [hex, ...]}
    python -m testbed.probe capture IFACE FILTER TIMEOUT COUNT [--send] [--absorb-udp PORT]
"""
from __future__ import annotations

import json
import select
import socket
import sys
import time


def _bind_udp(family: int, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("", port))
    return sock


def main(argv: list[str]) -> int:
    from scapy.all import conf   # imported here, inside the node's namespace

    mode, iface = argv[0], argv[1]
    if mode == "send":
        frames = [bytes.fromhex(h) for h in json.load(sys.stdin)["frames"]]
        sock = conf.L2socket(iface=iface)
        for f in frames:
            sock.send(f)
        sock.close()
        print(json.dumps({"sent": len(frames)}), flush=True)
        return 0
    if mode == "capture":
        bpf_filter, timeout, count = argv[2], float(argv[3]), int(argv[4])
        to_send = [bytes.fromhex(h) for h in json.load(sys.stdin)["frames"]] if "--send" in argv else []
        listener = conf.L2listen(iface=iface, filter=bpf_filter or None)
        # a bound socket absorbs the test's UDP, so the host sends no ICMP port-unreachable back
        absorbers = [_bind_udp(family, int(argv[argv.index("--absorb-udp") + 1]))
                     for family in (socket.AF_INET, socket.AF_INET6)] if "--absorb-udp" in argv else []
        print("READY", flush=True)
        if to_send:
            sock = conf.L2socket(iface=iface)
            for f in to_send:
                sock.send(f)
            sock.close()
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([listener], [], [], remaining)[0]:
                break
            _, raw, _ = listener.recv_raw(0xffff)
            if raw:
                got.append(raw.hex())
        listener.close()
        for sock in absorbers:
            sock.close()
        print(json.dumps({"frames": got}), flush=True)
        return 0
    print(f"unknown probe mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
