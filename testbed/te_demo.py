"""The path allocator's closed loop on a running testbed: elephants found and moved.

    run_tcp_flows  long TCP flows (iperf3) start on one path; the loop spreads them
    run_probe      a TCP elephant, then a sequence-numbered UDP probe on its path, which the
                   loop moves (the newer of two equal elephants moves): loss and order
    run_demo       both on a fresh testbed (diamond), printed, with a plot of each flow's
                   throughput over time and the moves marked

A Count-Min sketch (cms) at the source's ingress router measures the flows; the loop
(controller.te.loop.PathLoop) runs in a thread of this process, so a move's install time and
the flows' own clocks compare directly.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field

from controller.errors import InnetError
from controller.stats import Flow as FlowKey
from controller.te.elephants import ElephantPolicy
from controller.te.live import LiveNetwork, flow_key
from controller.te.loop import EpochReport, Monitor, PathLoop
from testbed.processes import end

MONITOR_NF = "cms"
# BMv2 forwards some tens of Mbit/s on this machine (four switches on two cores): its demo links
# are slower than that, so the links, not the switches, are what the flows share
BMV2_BW_MBPS = 10.0
PROBE_SHARE = 0.16   # the probe's rate, as a share of its path's bottleneck: an elephant (> 10%)
EPOCH_S = 0.2
TCP, UDP = 6, 17
INTERVAL_S = 0.25   # iperf3's reporting interval
SETTLE_S = 1.0      # after a move, TCP takes this long to settle on its new path


@dataclass
class Series:
    label: str
    times: list[float]      # interval ends, s since the run began
    mbps: list[float]


@dataclass
class FlowsRun:
    began: float                        # wall clock, when the flows started
    series: list[Series]
    moves: list[dict]
    observe_s: float                    # the loop watched without acting this long
    onset_to_override_s: float | None   # the flows' start (or the end of watching) to the first move
    before_mbps: float                  # all flows together, before the first move
    after_mbps: float                   # and from SETTLE_S after the last


@dataclass
class ProbeRun:
    began: float
    series: list[Series]
    moves: list[dict]                   # the probe's
    onset_to_override_s: float | None   # the probe's first packet to its ingress entry
    sent: int
    received: int
    lost_before_move: int               # congestion losses while it shared the TCP flow's path
    lost_after_move: int                # sent after its ingress entry was written
    reordered: int
    duplicates: int


@dataclass
class LoopThread:
    """A PathLoop running epochs in a thread until stopped."""
    loop: PathLoop
    interval_s: float = EPOCH_S
    reports: list[EpochReport] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="te-loop", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run(self.interval_s, self._stop, on_epoch=self.reports.append)
        except BaseException as exc:   # raised again in stop(), in the caller's thread
            self._error = exc

    def __enter__(self) -> "LoopThread":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._error is not None and exc[0] is None:
            raise self._error

    def moves(self, since: float = 0.0) -> list[dict]:
        return [m for r in self.reports for m in r.moves if m["installed_at"] >= since]


def monitor_ingress(tb, src: str) -> Monitor:
    """cms on the interface of the source's ingress router that faces it."""
    gw = tb.topo.gateway(src)
    if tb.controller.store.instance(gw.node, MONITOR_NF) is None:
        tb.controller.deploy(gw.node, MONITOR_NF, [gw.name])
    return Monitor(gw.node, MONITOR_NF)


def start_loop(tb, src: str, policy: ElephantPolicy | None = None, act: bool = True, progress=None) -> LoopThread:
    loop = PathLoop(tb.controller, [monitor_ingress(tb, src)], policy or ElephantPolicy(share=0.1), act=act,
                    progress=progress)
    return LoopThread(loop)


def probe_pps(tb, src: str, dst: str, size: int = 1000) -> int:
    """The probe's packet rate: PROBE_SHARE of the bottleneck on the routed path."""
    live = LiveNetwork(tb.topo, tb.controller.store)
    path = live.default_path(FlowKey.of(_address(tb, src), _address(tb, dst), 1, 1, UDP))
    mbps = live.bottleneck(path) if path else None
    if mbps is None:
        raise InnetError(f"no link between {src} and {dst} has a bandwidth: nothing for the loop to balance",
                         hint="give the links a bw (Mbit/s) in the topology")
    return max(1, int(PROBE_SHARE * mbps * 1e6 / 8 / size))


def _wait_out(runner: LoopThread) -> None:
    """Let the loop run until the ended flows have left the elephants (and their overrides gone)."""
    time.sleep((runner.loop.policy.hold + 2) * runner.interval_s)


def _address(tb, host: str) -> str:
    return str(tb.topo.nodes[host].interfaces[0].ipv4.ip)


def _iperf3_client(tb, src: str, dst: str, port: int, cport: int, seconds: float):
    return tb.host(src).popen(["iperf3", "-c", _address(tb, dst), "-p", str(port), "--cport", str(cport),
                               "-t", str(seconds), "-i", str(INTERVAL_S), "-J", "--get-server-output"])


def _iperf3_series(proc, label: str) -> Series:
    """The flow's throughput per interval as its receiver counted it (the sender's figures count
    what entered its socket buffer, which runs ahead of a shaped link)."""
    out, err = proc.communicate(timeout=120)
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        raise InnetError(f"iperf3 ({label}) gave no result: {err.decode(errors='replace')[-300:]}") from None
    if "error" in doc:
        raise InnetError(f"iperf3 ({label}): {doc['error']}")
    intervals = [i["sum"] for i in doc["server_output_json"]["intervals"]]
    return Series(label, [i["end"] for i in intervals], [i["bits_per_second"] / 1e6 for i in intervals])


def _servers(tb, dst: str, ports: list[int]) -> list:
    servers = [tb.host(dst).popen(["iperf3", "-s", "-1", "-J", "-p", str(p), "-i", str(INTERVAL_S)]) for p in ports]
    time.sleep(0.3)
    return servers


def _key(tb, src: str, dst: str, sport: int, dport: int, proto: int) -> str:
    """The flow's key as the loop logs its moves."""
    return flow_key(FlowKey.of(_address(tb, src), _address(tb, dst), sport, dport, proto))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_tcp_flows(tb, src: str, dst: str, count: int = 2, seconds: float = 8.0, observe_s: float = 2.0,
                  progress=print) -> FlowsRun:
    """`count` TCP flows from src to dst at once, all on the routed path; the loop watches them
    for `observe_s` (a dry run: the throughput they get sharing it), then acts. Throughput of
    all of them together before the first move and after the last."""
    ports, cports = [5201 + i for i in range(count)], [40001 + i for i in range(count)]
    servers = _servers(tb, dst, ports)
    try:
        with start_loop(tb, src, act=not observe_s, progress=progress) as runner:
            began = time.time()
            clients = [_iperf3_client(tb, src, dst, p, c, seconds) for p, c in zip(ports, cports)]
            if observe_s:
                time.sleep(observe_s)
                runner.loop.act = True
            series = [_iperf3_series(proc, f"TCP :{c}") for proc, c in zip(clients, cports)]
            _wait_out(runner)
    finally:
        for s in servers:
            end(s)
    keys = {_key(tb, src, dst, c, p, TCP) for p, c in zip(ports, cports)}
    moves = [m for m in runner.moves() if m["flow"] in keys and m["to"]]
    first = moves[0]["installed_at"] - began if moves else None
    last = moves[-1]["installed_at"] - began if moves else None
    totals = [sum(rates) for rates in zip(*(s.mbps for s in series))]
    ends = series[0].times
    before = [t for t, e in zip(totals, ends) if first is None or e <= first]
    after = [t for t, e in zip(totals, ends) if last is not None and e - INTERVAL_S >= last + SETTLE_S]
    return FlowsRun(began, series, moves, observe_s, None if first is None else first - observe_s,
                    _mean(before[1:] or before), _mean(after))


def run_probe(tb, src: str, dst: str, seconds: float = 8.0, pps: int = 2000, size: int = 1000,
              progress=print) -> ProbeRun:
    """A TCP elephant, then a UDP probe on its path a moment later: the loop moves the probe."""
    port, cport, probe_port, probe_sport = 5203, 40003, 9000, 40004
    lead = 1.5
    servers = _servers(tb, dst, [port])
    receiver = tb.host(dst).popen([sys.executable, "-m", "testbed.udpprobe", "receive", str(probe_port),
                                   "--seconds", str(seconds + 5)], text=True)
    try:
        if receiver.stdout.readline().strip() != "READY":
            raise InnetError(f"the UDP probe receiver on {dst} did not start: {receiver.stderr.read()[-300:]}")
        with start_loop(tb, src, progress=progress) as runner:
            began = time.time()
            client = _iperf3_client(tb, src, dst, port, cport, seconds)
            time.sleep(lead)
            sender = tb.host(src).popen([sys.executable, "-m", "testbed.udpprobe", "send", _address(tb, dst),
                                         str(probe_port), "--pps", str(pps), "--seconds", str(seconds - lead - 1),
                                         "--size", str(size), "--sport", str(probe_sport)], text=True)
            tcp = _iperf3_series(client, f"TCP :{cport}")
            sent = json.loads(sender.communicate(timeout=60)[0].strip().splitlines()[-1])["sent"]
            got = json.loads(receiver.communicate(timeout=60)[0].strip().splitlines()[-1])
            _wait_out(runner)
    finally:
        end(receiver)
        for s in servers:
            end(s)
    key = _key(tb, src, dst, probe_sport, probe_port, UDP)
    moves = [m for m in runner.moves() if m["flow"] == key and m["to"]]
    arrivals = got["arrivals"]
    moved_at = moves[0]["installed_at"] if moves else float("inf")
    first_sent = arrivals[0][1] if arrivals else began
    # a lost packet's send time, from its sequence number and the probe's pace
    lost_after = sum(1 for seq in got["lost"] if first_sent + (seq - arrivals[0][0]) / pps >= moved_at) \
        if arrivals else len(got["lost"])
    probe = _probe_series(arrivals, began, size)
    onset = moved_at - first_sent if moves and arrivals else None
    return ProbeRun(began, [tcp, probe], moves, onset, sent, got["received"], len(got["lost"]) - lost_after, lost_after,
                    got["reordered"], got["duplicates"])


def _probe_series(arrivals: list, began: float, size: int, step: float = INTERVAL_S) -> Series:
    """The probe's received rate per `step` seconds."""
    if not arrivals:
        return Series("UDP probe", [], [])
    last = max(a[2] for a in arrivals) - began
    bins = [0] * (int(last / step) + 1)
    for _, _, at in arrivals:
        bins[int((at - began) / step)] += 1
    return Series("UDP probe", [(i + 1) * step for i in range(len(bins))], [n * size * 8 / step / 1e6 for n in bins])


def run_demo(topology: str = "diamond", target: str | None = None, seconds: float = 8.0,
             plot: str | None = "te-demo.png", bw: float | None = None) -> int:
    """Both runs on a fresh testbed, printed; a plot of every flow's throughput with the moves.
    `bw` replaces the bandwidth of every link that has one (default: BMV2_BW_MBPS on BMv2)."""
    from controller.topology import load_topology
    from testbed.net import Testbed

    topo = load_topology(topology)
    if target:
        topo = topo.retarget(target)
    bw = bw or (BMV2_BW_MBPS if all(r.target == "bmv2" for r in topo.routers) else None)
    if bw:
        for link in topo.links:
            link.bw = bw if link.bw else None
    if len(topo.hosts) < 2:
        raise InnetError(f"topology {topo.name} has fewer than two hosts: no flow to move")
    src, dst = topo.hosts[0].name, topo.hosts[-1].name
    with Testbed(topo) as tb:
        print(f"[te] two TCP flows {src} -> {dst}; the loop watches for 2 s, then acts")
        pair = run_tcp_flows(tb, src, dst, 2, seconds)
        print(f"[te] both flows: {pair.before_mbps:.1f} Mbit/s sharing a path, {pair.after_mbps:.1f} Mbit/s after "
              f"the move ({pair.after_mbps / max(pair.before_mbps, 1e-9):.2f}x)")
        print(f"[te] a TCP flow, then a UDP probe on its path ({seconds:g} s)")
        probe = run_probe(tb, src, dst, seconds, pps=probe_pps(tb, src, dst))
        onset = "not moved" if probe.onset_to_override_s is None else \
            f"moved {1000 * probe.onset_to_override_s:.0f} ms after its first packet"
        print(f"[te] probe: {onset}; {probe.sent} sent, {probe.received} received, "
              f"{probe.lost_before_move} lost before the move (congestion), {probe.lost_after_move} after it, "
              f"{probe.reordered} reordered")
    if plot:
        print(plot_runs(pair, probe, plot))
    return 0 if pair.moves and probe.moves else 1


def plot_runs(pair: FlowsRun, probe: ProbeRun, path: str) -> str:
    """Each run's flows over time, one panel per run, every move a dashed line."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "[te] no plot: matplotlib is missing (pip install -e '.[bench]')"
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.5), sharey=True)
    for ax, run, title in zip(axes, (pair, probe), ("two TCP flows on one path", "TCP, then a UDP probe")):
        for s in run.series:
            ax.plot(s.times, s.mbps, label=s.label, drawstyle="steps-pre")
        top = max((v for s in run.series for v in s.mbps), default=1.0)
        for m in run.moves:
            at = m["installed_at"] - run.began
            ax.axvline(at, color="k", linestyle="--", linewidth=1)
            ax.annotate(f"port {m['flow'].split()[2]} moved to {'>'.join(m['to'][1:-1])}", (at, top),
                        fontsize=8, xytext=(3, -10), textcoords="offset points")
        ax.set_title(title)
        ax.set_ylabel("Mbit/s")
        ax.legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel("s since the run began")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"[te] plot: {path}"
