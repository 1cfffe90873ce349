"""Real frames from scapy through the real XDP NFRouter on r1 (linear: h1 -- r1 -- h2)."""
import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPOption_RR
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6TimeExceeded, IPv6
from scapy.layers.l2 import ARP, Ether

from frames import (H1, H1_6, H1_MAC, H2, H2_MAC, PORT, R1_IN, R1_IN_6, R1_IN_MAC, R1_OUT_MAC, udp4, udp6)
from testbed import traffic

pytestmark = pytest.mark.testbed


def verdicts(tb):
    return tb.controller.read_stat("r1", "nfrouter", "verdicts")


def to_h2(tb):
    """Packets the fast path forwarded to h2 (its two host routes), replies excluded."""
    return sum(r.packets for r in tb.routes.list("r1") if r.prefix in (f"{H2}/32", "2001:db8:0:2::2/128"))


def through_r1(tb, frames, bpf=f"udp dst port {PORT}", timeout=1.5):
    """Send frames from h1; return what reaches h2 and how r1's counters moved
    ("forwarded": fast-path packets to h2; the rest: verdict counters)."""
    before, fwd_before = verdicts(tb), to_h2(tb)
    cap = traffic.Capture(tb.node("h2"), "h2-eth0", bpf, timeout=timeout, count=len(frames), absorb_udp=PORT)
    traffic.send(tb.node("h1"), "h1-eth0", [bytes(f) for f in frames])
    got = cap.frames()
    after = verdicts(tb)
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k] and k != "forwarded"}
    moved["forwarded"] = to_h2(tb) - fwd_before
    return got, moved


def route_counter(tb, prefix):
    return next(r for r in tb.routes.list("r1") if r.prefix == prefix)


def test_ipv4_forwarded_by_xdp(linear):
    before = route_counter(linear, "10.0.2.2/32")
    got, moved = through_r1(linear, [udp4(ttl=64)])
    assert moved.get("forwarded") == 1
    assert len(got) == 1
    out = Ether(got[0])
    assert (out.src, out.dst) == (R1_OUT_MAC, H2_MAC)
    assert out[IP].ttl == 63
    checksum = out[IP].chksum
    del out[IP].chksum
    assert Ether(bytes(out))[IP].chksum == checksum, "IPv4 header checksum invalid after forwarding"
    after = route_counter(linear, "10.0.2.2/32")
    assert after.packets - before.packets == 1
    assert after.bytes - before.bytes == len(got[0])


def test_ipv6_forwarded_by_xdp(linear):
    got, moved = through_r1(linear, [udp6(hlim=9)])
    assert moved.get("forwarded") == 1 and len(got) == 1
    out = Ether(got[0])
    assert (out.src, out.dst) == (R1_OUT_MAC, H2_MAC)
    assert out[IPv6].hlim == 8


def test_longest_prefix_wins(linear):
    routes = linear.routes
    routes.add("r1", "10.99.0.0/16", "r1-eth0", H1_MAC, via=H1)     # back towards h1
    routes.add("r1", "10.99.1.0/24", "r1-eth1", H2_MAC, via=H2)     # the longer one: towards h2
    try:
        got, _ = through_r1(linear, [udp4(dst="10.99.1.7")])
        assert len(got) == 1
        back = traffic.Capture(linear.node("h1"), "h1-eth0", f"ether src {R1_IN_MAC} and dst host 10.99.2.7",
                               timeout=1.5, count=1)
        traffic.send(linear.node("h1"), "h1-eth0", [bytes(udp4(dst="10.99.2.7"))])
        assert len(back.frames()) == 1, "the /16 should have sent 10.99.2.7 back out r1-eth0"
        assert route_counter(linear, "10.99.1.0/24").packets >= 1
        assert route_counter(linear, "10.99.0.0/16").packets >= 1
    finally:
        routes.delete("r1", "10.99.0.0/16")
        routes.delete("r1", "10.99.1.0/24")
    assert not [r for r in routes.list("r1") if r.prefix.startswith("10.99.")]


def test_ttl_1_goes_to_kernel_which_answers_time_exceeded(linear):
    before = verdicts(linear)
    replies = traffic.exchange(linear.node("h1"), "h1-eth0", [bytes(udp4(ttl=1))],
                               f"icmp and src host {R1_IN}", timeout=1.5, count=1)
    assert verdicts(linear)["pass_ttl_expired"] == before["pass_ttl_expired"] + 1
    assert len(replies) == 1 and Ether(replies[0])[ICMP].type == 11


def test_hop_limit_1_goes_to_kernel(linear):
    before = verdicts(linear)
    replies = traffic.exchange(linear.node("h1"), "h1-eth0", [bytes(udp6(hlim=1))],
                               f"icmp6 and src host {R1_IN_6}", timeout=1.5, count=1)
    assert verdicts(linear)["pass_ttl_expired"] == before["pass_ttl_expired"] + 1
    assert replies and ICMPv6TimeExceeded in Ether(replies[0])


def test_unknown_destination_goes_to_kernel_which_answers_unreachable(linear):
    before = verdicts(linear)
    replies = traffic.exchange(linear.node("h1"), "h1-eth0", [bytes(udp4(dst="198.51.100.9"))],
                               f"icmp and src host {R1_IN}", timeout=1.5, count=1)
    assert verdicts(linear)["pass_no_route"] == before["pass_no_route"] + 1
    assert len(replies) == 1 and Ether(replies[0])[ICMP].type == 3


def test_arp_is_answered_by_the_kernel(linear):
    ask = Ether(src=H1_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=H1_MAC, psrc=H1, pdst=R1_IN)
    before = verdicts(linear)
    replies = traffic.exchange(linear.node("h1"), "h1-eth0", [bytes(ask)], "arp and arp[6:2] = 2",
                               timeout=1.5, count=1)
    assert verdicts(linear)["pass_not_ip"] >= before["pass_not_ip"] + 1
    assert replies and Ether(replies[0])[ARP].hwsrc == R1_IN_MAC


def test_neighbour_discovery_is_answered_by_the_kernel(linear):
    solicited = "ff02::1:ff00:1"          # solicited-node multicast of ...::1
    ns = (Ether(src=H1_MAC, dst="33:33:ff:00:00:01") / IPv6(src=H1_6, dst=solicited, hlim=255)
          / ICMPv6ND_NS(tgt=R1_IN_6))
    replies = traffic.exchange(linear.node("h1"), "h1-eth0", [bytes(ns)],
                               f"icmp6 and ip6[40] = 136 and src host {R1_IN_6}", timeout=1.5, count=1)
    assert replies and Ether(replies[0])[ICMPv6ND_NA].tgt == R1_IN_6


def test_malformed_frames_follow_the_documented_rule(linear):
    good = udp4(payload=b"after")
    raw = bytes(udp4())
    truncated_ip = raw[:14 + 10]                     # IPv4 header cut short
    ihl_short = bytearray(raw)
    ihl_short[14] = 0x44                             # IHL 4 < 5
    options = udp4()
    options[IP].options = [IPOption_RR()]
    bad_sum = udp4()
    bad_sum[IP].chksum = 0x1234
    first_frag = udp4(flags="MF", frag=0, payload=b"f" * 32)
    later_frag = udp4(frag=4, payload=b"g" * 32)
    frames = [truncated_ip, bytes(ihl_short), options, bad_sum, first_frag, later_frag, good]
    got, moved = through_r1(linear, frames, bpf=f"dst host {H2} and (udp or ip[6:2] & 0x3fff != 0)", timeout=2)
    assert moved.get("pass_malformed") == 3            # truncated, IHL<5, bad checksum: the kernel drops them
    assert moved.get("pass_ip_options", 0) >= 1        # (IPv6 MLD reports from the hosts count here too)
    assert moved.get("forwarded") == 3                 # both fragments and the good packet
    by_payload = [Ether(g) for g in got]
    assert any(IP in p and p[IP].options for p in by_payload), "the kernel should forward the options packet"
    fragments = [p for p in by_payload if p[IP].flags.MF or p[IP].frag]
    assert len(fragments) == 2
    assert any(p.haslayer(UDP) and bytes(p[UDP].payload) == b"after" for p in by_payload)
    assert all(p[IP].ttl == 63 for p in by_payload)


def test_ethernet_padding_is_trimmed_like_the_kernel(linear):
    short = bytes(udp4(payload=b"x")) + b"\x00" * 13    # padded to 60 bytes on the wire
    got, moved = through_r1(linear, [short])
    assert moved.get("forwarded") == 1
    assert len(got) == 1 and len(got[0]) == 14 + 20 + 8 + 1
