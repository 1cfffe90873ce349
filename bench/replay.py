"""Replaying a trace through a loaded XDP program, and a bare namespace to deploy programs in.

`replay` runs every packet once through the program with BPF_PROG_TEST_RUN, in trace
order, so the program's maps see the trace as a live interface would. One
libbpf.TestRunner runs every frame in place in the trace's buffer, nothing copied.
"""
from __future__ import annotations

from collections import Counter
from typing import ContextManager

import numpy as np

from bench.zipf import Frames
from controller.bpf import libbpf
from controller.errors import BpfError
from controller.service import Controller
from testbed.scratch import Veth, controller_node


def replay(prog_fd: int, frames: Frames, order: np.ndarray, verdicts: Counter | None = None) -> int:
    """Run the frames of `order` (flow indexes) through the program, one test run each.

    Returns the kernel's summed run time in ns; counts each XDP verdict into `verdicts`."""
    addresses = (frames.buf.ctypes.data + frames.offset).tolist()
    lengths = frames.length.astype(np.int64).tolist()
    run = libbpf.TestRunner(prog_fd).run_at
    total_ns = 0
    for flow in order.tolist():
        try:
            retval, ns = run(addresses[flow], lengths[flow])
        except BpfError as exc:
            raise BpfError(f"replaying the frame of flow {flow}: {exc.message}", exc.errno, exc.hint) from exc
        total_ns += ns
        if verdicts is not None:
            verdicts[retval] += 1
    return total_ns


def bench_node(prefix: str, veths: int, ipv6: bool = True) -> ContextManager[tuple[Controller, str]]:
    """A fresh namespace `<prefix>-<random>` holding veth pairs hb<i>/hp<i>, hb<i> with address
    198.18.<i>.1/24 (the benchmarking range), as a node of a new controller (testbed.scratch.
    controller_node); `ipv6=False`: no neighbour discovery or MLD of its own reaches a program."""
    return controller_node(prefix, [Veth(f"hb{i}", f"hp{i}", f"198.18.{i}.1/24") for i in range(veths)], ipv6)
