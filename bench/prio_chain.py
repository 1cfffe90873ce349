"""prio as a service-chain hop: per-packet cost of its XDP chain program (nfs/prio.yaml
programs.xdp.behind), beside cms's and rxcount's, on the NSH frame a forwarder hands an NF.

    .venv/bin/python bench/prio_chain.py [--quick]   (as root)

BPF_PROG_TEST_RUN on each program loaded alone (an empty chain_next: the tail call falls
through to XDP_PASS, as it would run into the forwarder in a chain), `repeat` runs per call so
the kernel's average per run holds no syscall cost; median over ROUNDS calls, round-robin.
A 64-byte inner UDP packet in an MD type 2 NSH. prio's cases: its worst path (flow_levels
missed, then dscp_levels hit: two hash lookups, three counter updates) and no entry at all
(the lowest level). It prints figures and asserts nothing but that each program passed the
frame on: it is a benchmark, not a test.
"""
from __future__ import annotations

import statistics
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: import from the repository

from scapy.contrib.nsh import NSH  # noqa: E402
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from controller.bpf import libbpf  # noqa: E402
from controller.bpf.build import compile_program  # noqa: E402
from controller.catalog import get_nf  # noqa: E402

XDP_PASS = 2
EF = 46


def nsh_frame(dscp: int) -> bytes:
    inner = IP(src="10.0.1.2", dst="10.0.2.2", tos=dscp << 2) / UDP(sport=4000, dport=9)
    inner = inner / (b"x" * (64 - len(inner)))
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / NSH(mdtype=2, nextproto=1, spi=1, si=254) / inner)


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    rounds, repeat = (5, 1000) if quick else (31, 10000)
    objects, cases = [], []   # cases: (label, prog fd, frame)
    try:
        for nf in ("rxcount", "cms", "prio"):
            program = get_nf(nf).xdp_program(behind=True)
            obj = libbpf.BpfObject(str(compile_program(program["source"]))).load()
            objects.append(obj)
            fd = obj.programs[program["entry"]]
            if nf == "prio":
                # dscp_levels[EF] = level 0, counter slot 0 (struct level_entry, include/prio.h)
                obj.maps["dscp_levels"].update(bytes([EF]), struct.pack("=B3xI", 0, 0))
                cases += [("prio: flow miss, DSCP entry (its worst path)", fd, nsh_frame(EF)),
                          ("prio: no entry (lowest level)", fd, nsh_frame(0))]
            else:
                cases.append((f"{nf}{' (reference: a count and chain_pass)' if nf == 'rxcount' else ''}",
                              fd, nsh_frame(EF)))
        runners = [(label, libbpf.TestRunner(fd, repeat=repeat), frame) for label, fd, frame in cases]
        times = {label: [] for label, *_ in cases}
        for _ in range(rounds + 1):   # the first round warms up and is not counted
            for label, runner, frame in runners:
                res = runner.run(frame)
                if res.retval != XDP_PASS or res.data_out != frame:
                    raise SystemExit(f"{label}: retval {res.retval}, expected XDP_PASS and the frame unchanged")
                times[label].append(res.duration_ns)
    finally:
        for obj in objects:
            obj.close()
    print(f"BPF_PROG_TEST_RUN, {len(cases[0][2])}-byte NSH frame (64-byte inner UDP packet), "
          f"median of {rounds} calls x {repeat} runs")
    print(f"{'program behind the forwarder':<48} {'ns/packet':>10}")
    for label, *_ in cases:
        print(f"{label:<48} {statistics.median(times[label][1:]):>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
