/* NFRouter on BMv2: IPv4/IPv6 longest-prefix-match forwarding with TTL/hop-limit
 * decrement, IPv4 checksum update and MAC rewrite; the contract is nfs/nfrouter.yaml.
 *
 * It forwards exactly what ebpf/nfrouter.bpf.c forwards, with the same bytes out
 * (Ethernet padding past the IP length trimmed). What the XDP router hands to the kernel
 * goes to the CPU port or is dropped (to_cpu_or_drop), counted under the same verdicts.
 *
 * port_macs (ingress port -> the port's MAC) is written by the controller (Bmv2Target) when
 * it deploys the NF, from the MACs of the switch's interfaces: only frames addressed to
 * their ingress port are routed, as Linux routes PACKET_HOST frames only.
 *
 * flow_routes (per-flow path overrides, 5-tuple exact on meta.flow as FlowKey fills it):
 * looked up only for a packet a `forward` route forwards, its entry replaces the route's
 * next hop. Every pass_* rule comes first, as on XDP.
 */
#include "include/pipeline.p4"

#ifndef MAX_ROUTES
#define MAX_ROUTES 1024
#endif
#ifndef MAX_FLOW_ROUTES
#define MAX_FLOW_ROUTES 1024
#endif
/* BMv2 knows no port MTU: IP packets longer than this are refused as pass_too_big. */
#ifndef NFROUTER_MTU
#define NFROUTER_MTU 1500
#endif

#define ETH_HLEN 14
#define IPV6_HLEN 40

control NfRouter(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    counter(VERDICT_COUNT, CounterType.packets) verdicts;
    direct_counter(CounterType.packets_and_bytes) ipv4_route_counters;
    direct_counter(CounterType.packets_and_bytes) ipv6_route_counters;
    direct_counter(CounterType.packets_and_bytes) flow_route_counters;

    verdict_t verdict = VERDICT_PASS_NO_ROUTE;   /* what a route lookup that misses leaves */
    bit<32> next_port = 0;
    bit<48> next_dst_mac = 0;
    bit<48> next_src_mac = 0;
    bit<32> ip_len = 0;          /* the IP packet's length, once a route was looked up */
    bit<32> ingress_port = 0;    /* the catalog's `port` is 32 bits */
    bit<48> ingress_mac = 0;
    bool ingress_known = false;  /* port_macs holds the ingress port */
    bool own_source = false;     /* own_ipv4 holds the IPv4 source */

    /* The route's next hop, applied only once the packet is known to fit (as on XDP). */
    action forward(bit<32> egress_port, bit<48> dst_mac, bit<48> src_mac) {
        verdict = VERDICT_FORWARDED;
        next_port = egress_port;
        next_dst_mac = dst_mac;
        next_src_mac = src_mac;
    }

    action local() {
        verdict = VERDICT_PASS_LOCAL;
    }

    table ipv4_routes {
        key = { hdr.ipv4.dstAddr: lpm @name("dst_addr"); }
        actions = { forward; local; @defaultonly NoAction; }
        default_action = NoAction();
        counters = ipv4_route_counters;
        size = MAX_ROUTES;
    }

    table ipv6_routes {
        key = { hdr.ipv6.dstAddr: lpm @name("dst_addr"); }
        actions = { forward; local; @defaultonly NoAction; }
        default_action = NoAction();
        counters = ipv6_route_counters;
        size = MAX_ROUTES;
    }

    action port_mac(bit<48> mac) {
        ingress_mac = mac;
        ingress_known = true;
    }

    table port_macs {
        key = { ingress_port: exact @name("port"); }
        actions = { port_mac; @defaultonly NoAction; }
        default_action = NoAction();
        size = 64;
    }

    action own_address() {
        own_source = true;
    }

    /* The node's own IPv4 addresses, the /32 `local` routes of ipv4_routes, which Bmv2Target
     * mirrors here (a table applies once per packet, and ipv4_routes is taken by the
     * destination): a packet from one goes to the CPU, as Linux refuses it (fib_validate_source). */
    table own_ipv4 {
        key = { hdr.ipv4.srcAddr: exact @name("addr"); }
        actions = { own_address; @defaultonly NoAction; }
        default_action = NoAction();
        size = 256;
    }

    /* A per-flow next hop: its forward() replaces the route's. */
    table flow_routes {
        key = {
            meta.flow.src_addr: exact @name("src_addr");
            meta.flow.dst_addr: exact @name("dst_addr");
            meta.flow.src_port: exact @name("src_port");
            meta.flow.dst_port: exact @name("dst_port");
            meta.flow.proto: exact @name("proto");
        }
        actions = { forward; @defaultonly NoAction; }
        default_action = NoAction();
        counters = flow_route_counters;
        size = MAX_FLOW_ROUTES;
    }

    @hidden action rewrite_macs() {
        hdr.ethernet.dstAddr = next_dst_mac;
        hdr.ethernet.srcAddr = next_src_mac;
        std.egress_spec = (bit<9>)next_port;
    }

    apply {
        ingress_port = (bit<32>)std.ingress_port;
        port_macs.apply();
        /* the link-layer rule, applied after the destination-class rule (as on XDP): a
         * broadcast/multicast MAC goes to the CPU (Linux never forwards it), another
         * station's MAC is dropped (PACKET_OTHERHOST); a port the controller did not
         * describe has no address to compare with */
        verdict_t l2_verdict = VERDICT_FORWARDED;
        if (hdr.ethernet.dstAddr[40:40] == 1) {
            l2_verdict = VERDICT_PASS_L2_BROADCAST;
        } else if (ingress_known && hdr.ethernet.dstAddr != ingress_mac) {
            l2_verdict = VERDICT_DROP_OTHER_HOST;
        }
        if (!hdr.ethernet.isValid()) {
            verdict = VERDICT_PASS_MALFORMED;
        } else if (hdr.ethernet.etherType == ETHERTYPE_IPV4) {
            bit<32> dst = hdr.ipv4.dstAddr;
            bit<32> src = hdr.ipv4.srcAddr;
            if (!hdr.ipv4.isValid() || hdr.ipv4.version != 4 || hdr.ipv4.ihl < 5) {
                verdict = VERDICT_PASS_MALFORMED;
            } else if (hdr.ipv4.ihl > 5) {
                verdict = VERDICT_PASS_IP_OPTIONS;
            } else if (hdr.ipv4.totalLen < 20 ||
                       ETH_HLEN + (bit<32>)hdr.ipv4.totalLen > std.packet_length ||
                       std.checksum_error == 1) {
                verdict = VERDICT_PASS_MALFORMED;
            } else if (dst[31:28] == 0xe || dst == 0xffffffff || dst[31:24] == 127 ||
                       dst[31:24] == 0) {
                /* multicast, limited broadcast, loopback and "this network" */
                verdict = VERDICT_PASS_LOCAL;
            } else if (l2_verdict != VERDICT_FORWARDED) {
                verdict = l2_verdict;
            } else if (src[31:28] == 0xe || src == 0xffffffff || src[31:24] == 127 || src == 0) {
                /* martian sources: multicast, limited broadcast, loopback, 0.0.0.0 (the rest
                 * of 0/8 Linux forwards) */
                verdict = VERDICT_DROP_MARTIAN_SOURCE;
            } else if (hdr.ipv4.ttl <= 1) {
                verdict = VERDICT_PASS_TTL_EXPIRED;
            } else {
                ipv4_routes.apply();
                own_ipv4.apply();
                ip_len = (bit<32>)hdr.ipv4.totalLen;
            }
        } else if (hdr.ethernet.etherType == ETHERTYPE_IPV6) {
            bit<128> dst = hdr.ipv6.dstAddr;
            bit<128> src = hdr.ipv6.srcAddr;
            /* payload length 0 is a jumbogram (or garbage): the kernel would judge it */
            if (!hdr.ipv6.isValid() || hdr.ipv6.version != 6 || hdr.ipv6.payloadLen == 0 ||
                ETH_HLEN + IPV6_HLEN + (bit<32>)hdr.ipv6.payloadLen > std.packet_length) {
                verdict = VERDICT_PASS_MALFORMED;
            } else if (hdr.ipv6.nextHdr == IP_PROTO_HOPOPT) {
                verdict = VERDICT_PASS_IP_OPTIONS;
            } else if (dst[127:120] == 0xff || dst[127:118] == 0x3fa || src[127:118] == 0x3fa) {
                /* multicast (NDP among it) and link-local (fe80::/10) stay on the link */
                verdict = VERDICT_PASS_LOCAL;
            } else if (l2_verdict != VERDICT_FORWARDED) {
                verdict = l2_verdict;
            } else if (src[127:120] == 0xff || src == 0 || src == 1) {
                /* martian sources: multicast, unspecified (::), loopback (::1) */
                verdict = VERDICT_DROP_MARTIAN_SOURCE;
            } else if (hdr.ipv6.hopLimit <= 1) {
                verdict = VERDICT_PASS_TTL_EXPIRED;
            } else {
                ipv6_routes.apply();
                ip_len = IPV6_HLEN + (bit<32>)hdr.ipv6.payloadLen;
            }
        } else {
            verdict = VERDICT_PASS_NOT_IP;
        }
        /* A route back out of the ingress port: Linux forwards it and sends a redirect. */
        if (verdict == VERDICT_FORWARDED && next_port == ingress_port) {
            verdict = VERDICT_PASS_HAIRPIN;
        }
        if (verdict == VERDICT_FORWARDED && own_source) {
            verdict = VERDICT_PASS_LOCAL_SOURCE;
        }
        /* A route forwards the packet (verdict forwarded): a flow_routes entry may replace
         * its next hop, before the MTU check (one apply: BMv2 takes a table once). */
        if (verdict == VERDICT_FORWARDED && meta.has_flow == 1) {
            flow_routes.apply();
        }
        if (verdict == VERDICT_FORWARDED && ip_len > NFROUTER_MTU) {
            verdict = VERDICT_PASS_TOO_BIG;
        }
        if (verdict == VERDICT_FORWARDED) {
            rewrite_macs();
            if (hdr.ipv4.isValid()) {
                hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
                meta.ipv4_rewritten = 1;
            } else {
                hdr.ipv6.hopLimit = hdr.ipv6.hopLimit - 1;
            }
            truncate(ETH_HLEN + ip_len);
        }
        if (verdict != VERDICT_FORWARDED) {
            to_cpu_or_drop(std);
        }
        verdicts.count(verdict);
    }
}

#ifndef INNET_COMPOSED
control InnetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    FlowKey() flow_key;
    NfRouter() nfrouter;
    apply {
        flow_key.apply(hdr, meta, std);     /* flow_routes' key, as in innet.p4 */
        nfrouter.apply(hdr, meta, std);
    }
}

INNET_SWITCH;
#endif
