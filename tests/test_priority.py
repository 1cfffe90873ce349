"""The priority NF on a real veth: tc classifier, HTB tree, real frames, tc's class statistics.

Two fresh namespaces joined by a veth pair; prio runs on the egress of pqa (node A) and
the controller sets up the HTB tree there. Frames are sent from A's pqa with a packet
socket, so they cross clsact egress and the root qdisc exactly as the stack's do.
"""
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from controller.errors import EntryError, QueueError
from controller.node import Node
from controller.queues import QueueLevel
from controller.service import Controller
from controller.tables import TableEntry
from testbed import traffic
from testbed.scratch import Veth, namespace, sh

pytestmark = pytest.mark.needs_root

A_ADDR, B_ADDR = "10.77.0.1", "10.77.0.2"
LINK = 100_000_000
LEVELS = [QueueLevel(0, 20_000_000), QueueLevel(1, 20_000_000), QueueLevel(2, 20_000_000)]


@pytest.fixture(scope="module")
def pair():
    """(controller, node A's name, node B's name): A's pqa <-> B's pqb, IPv6 off so the link stays quiet."""
    with namespace("pq", [Veth("pqa", "pqb", f"{A_ADDR}/24", f"{B_ADDR}/24")], peers_apart=True, ipv6=False) as ns:
        ctl = Controller()
        ctl.add_node(Node(ns.name, ns.path))
        yield ctl, ns.name, ns.peer
        ctl.forget_node(ns.name)


@pytest.fixture
def prio(pair):
    """prio deployed on pqa with three levels and their queues; removed afterwards."""
    ctl, a, _ = pair
    ctl.deploy(a, "prio", ["pqa"], {"levels": 3})
    ctl.configure_queues(a, "prio", "pqa", LINK, LEVELS)
    yield ctl, a
    assert ctl.remove(a, "prio")


def class_packets(ctl, node):
    return [q.packets for q in ctl.queue_stats(node, "prio", "pqa")]


def eth(dst="02:77:00:00:00:02"):
    """Explicit MACs: scapy would otherwise resolve them from the test process's own namespace."""
    return Ether(src="02:77:00:00:00:01", dst=dst)


def udp4(dscp=0, sport=4000, dport=5000, size=100):
    return eth() / IP(src=A_ADDR, dst=B_ADDR, tos=dscp << 2) / UDP(sport=sport, dport=dport) / (b"x" * size)


def udp6(dscp=0, sport=4000, dport=5000):
    return eth() / IPv6(src="2001:db8:77::1", dst="2001:db8:77::2", tc=dscp << 2) / UDP(sport=sport, dport=dport)


def test_each_class_lands_in_its_htb_class(prio):
    ctl, a = prio
    rules = [
        TableEntry("dscp_levels", {"dscp": 46}, "set_level", {"level": 0}),
        TableEntry("dscp_levels", {"dscp": 10}, "set_level", {"level": 1}),
        # flow beats DSCP: this flow carries DSCP 46 but is sent to level 1
        TableEntry("flow_levels", {"src_addr": A_ADDR, "dst_addr": B_ADDR, "src_port": 5001, "dst_port": 6001,
                                   "proto": 17}, "set_level", {"level": 1}),
        TableEntry("flow_levels", {"src_addr": "2001:db8:77::1", "dst_addr": "2001:db8:77::2", "src_port": 7000,
                                   "dst_port": 7001, "proto": 17}, "set_level", {"level": 0}),
    ]
    ctl.write(a, "prio", rules)
    by_dscp = [udp4(dscp=46, sport=4000 + i) for i in range(3)]                # level 0 (DSCP)
    by_flow4 = [udp4(dscp=46, sport=5001, dport=6001) for _ in range(4)]      # level 1 (flow over DSCP)
    unmatched = [udp4(dscp=0, sport=4100 + i) for i in range(2)] + \
        [eth() / IP(src=A_ADDR, dst=B_ADDR) / TCP(sport=80, dport=4242 + i) for i in range(3)]  # level 2
    by_dscp6 = [udp6(dscp=10) for _ in range(2)]                               # level 1 (DSCP, IPv6)
    by_flow6 = [udp6(sport=7000, dport=7001) for _ in range(6)]               # level 0 (flow, IPv6)
    arp = [eth("ff:ff:ff:ff:ff:ff") / ARP(hwsrc="02:77:00:00:00:01", psrc=A_ADDR, pdst=B_ADDR)]      # not IP: HTB's default
    frames = [bytes(f) for f in by_dscp + by_flow4 + unmatched + by_dscp6 + by_flow6 + arp]
    expect = {0: by_dscp + by_flow6, 1: by_flow4 + by_dscp6, 2: unmatched}

    classes_before = class_packets(ctl, a)
    regs_before = ctl.read_registers(a, "prio", "levels")
    traffic.send(ctl.node(a), "pqa", frames)
    classes = [after - before for after, before in zip(class_packets(ctl, a), classes_before)]
    regs = ctl.read_registers(a, "prio", "levels")

    assert classes == [len(expect[0]), len(expect[1]), len(expect[2]) + len(arp)], "tc class statistics"
    assert [int(regs["packets"][lv] - regs_before["packets"][lv]) for lv in range(3)] == \
        [len(expect[lv]) for lv in range(3)], "the levels registers count IP packets only"
    assert [int(regs["bytes"][lv] - regs_before["bytes"][lv]) for lv in range(3)] == \
        [sum(len(bytes(f)) for f in expect[lv]) for lv in range(3)]

    counted = {(c.entry.table, tuple(sorted(c.entry.match.items()))): c.packets
               for t in ("dscp_levels", "flow_levels") for c in ctl.read_counters(a, "prio", t)}
    assert sorted(counted.values()) == sorted([3, 2, 4, 6])
    assert counted[("dscp_levels", (("dscp", 46),))] == 3, "the flow rule's packets are not counted by DSCP"


def test_stack_traffic_follows_dscp(prio):
    """The kernel's own packets (ping with TOS 0xb8 = DSCP 46) are classified too."""
    ctl, a = prio
    ctl.write(a, "prio", [TableEntry("dscp_levels", {"dscp": 46}, "set_level", {"level": 0})])
    before = class_packets(ctl, a)
    sh(a, f"ping -c 3 -i 0.05 -W 1 -Q 0xb8 {B_ADDR}")
    after = class_packets(ctl, a)
    assert after[0] - before[0] == 3   # ICMP echo requests: no ports, so only the DSCP rule matches


def tree(ns: str) -> str:
    return sh(ns, "tc qdisc show dev pqa; tc filter show dev pqa egress")


def test_remove_leaves_nothing(pair):
    ctl, a, _ = pair
    ctl.deploy(a, "prio", ["pqa"])
    ctl.configure_queues(a, "prio", "pqa", LINK, LEVELS)
    assert "htb" in tree(a) and "innet-prio" in tree(a)
    ctl.remove(a, "prio")
    left = tree(a)
    assert "htb" not in left and "clsact" not in left and "bpf" not in left, left
    pins = ctl.target("xdp").node_pins(a)
    assert not (pins.exists() and any(pins.iterdir())), "no pins left"
    assert ctl.deployments(a) == [] and a not in ctl.records.nodes()


@pytest.mark.parametrize("entry, message", [
    (TableEntry("dscp_levels", {"dscp": 64}, "set_level", {"level": 0}), r"dscp: 64 is out of range.*below 64"),
    (TableEntry("dscp_levels", {"dscp": 8}, "set_level", {"level": 3}), r"level: 3 is out of range.*below 3 \(levels\)"),
])
def test_bad_rules_are_refused(prio, entry, message):
    ctl, a = prio
    with pytest.raises(EntryError, match=message):
        ctl.write(a, "prio", [TableEntry("dscp_levels", {"dscp": 1}, "set_level", {"level": 1}), entry])
    assert ctl.read(a, "prio", "dscp_levels") == [], "all or nothing: the good entry was not left behind"


@pytest.mark.parametrize("link, levels, message", [
    (LINK, [QueueLevel(0, 1000), QueueLevel(1, 1000), QueueLevel(3, 1000)], r"unknown level 3.*levels 0\.\.2"),
    (LINK, [QueueLevel(0, 1000), QueueLevel(1, 1000)], r"2 levels given, prio runs with 3 \(missing \[2\]\)"),
    (LINK, [QueueLevel(0, LINK + 1), QueueLevel(1, 1000), QueueLevel(2, 1000)], r"level 0 rate .* exceeds the link"),
    (LINK, [QueueLevel(0, 1000, 2 * LINK), QueueLevel(1, 1000), QueueLevel(2, 1000)], r"ceil .* exceeds the link"),
    (LINK, [QueueLevel(i, LINK // 2) for i in range(3)], r"guaranteed rates add up to 150000000 bit/s"),
])
def test_bad_queues_are_refused_and_leave_nothing(pair, link, levels, message):
    ctl, a, _ = pair
    ctl.deploy(a, "prio", ["pqa"], {"levels": 3})
    try:
        before = tree(a)
        with pytest.raises(QueueError, match=message):
            ctl.configure_queues(a, "prio", "pqa", link, levels)
        assert tree(a) == before and "htb" not in before, "no HTB tree half set up"
        with pytest.raises(QueueError, match="no queues are configured"):
            ctl.queue_stats(a, "prio", "pqa")
    finally:
        ctl.remove(a, "prio")


def test_failed_reconfiguration_keeps_the_previous_tree(prio):
    ctl, a = prio
    before = tree(a)
    with pytest.raises(QueueError):
        ctl.configure_queues(a, "prio", "pqa", LINK, [QueueLevel(i, LINK) for i in range(3)])
    assert tree(a) == before
    assert [q.rate_bps for q in ctl.queue_stats(a, "prio", "pqa")] == [q.rate_bps for q in LEVELS]


def test_foreign_root_qdisc_is_not_replaced(pair):
    ctl, a, _ = pair
    sh(a, "tc qdisc add dev pqa root handle 7: tbf rate 1mbit burst 10kb latency 50ms")
    ctl.deploy(a, "prio", ["pqa"])
    try:
        with pytest.raises(QueueError, match=r"already has a root qdisc \(tbf 7:\)"):
            ctl.configure_queues(a, "prio", "pqa", LINK, LEVELS)
        assert "tbf 7:" in tree(a)
    finally:
        ctl.remove(a, "prio")
        sh(a, "tc qdisc del dev pqa root")
