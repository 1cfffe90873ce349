/* A small v1model program for the BMv2 target's error-path tests (tests/test_bmv2_errors.py):
 * an LPM table with a direct counter, an exact table whose key is narrower than the test
 * catalog (tiny.yaml) claims, an indirect counter and a register. */
#include <core.p4>
#include <v1model.p4>

#ifndef TINY_SIZE
#define TINY_SIZE 16
#endif

header ethernet_t { bit<48> dst; bit<48> src; bit<16> ether_type; }
header ipv4_t {
    bit<4> version; bit<4> ihl; bit<8> tos; bit<16> total_len; bit<16> id; bit<3> flags;
    bit<13> frag; bit<8> ttl; bit<8> proto; bit<16> checksum; bit<32> src; bit<32> dst;
}
struct headers_t { ethernet_t ethernet; ipv4_t ipv4; }
struct metadata_t { }

parser TinyParser(packet_in pkt, out headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    state start {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) { 0x0800: ipv4; default: accept; }
    }
    state ipv4 { pkt.extract(hdr.ipv4); transition accept; }
}

control TinyVerify(inout headers_t hdr, inout metadata_t meta) { apply { } }

control TinyIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    direct_counter(CounterType.packets_and_bytes) route_counters;
    counter(2, CounterType.packets) seen;
    register<bit<64>>(TINY_SIZE) hits;

    action forward(bit<32> egress_port, bit<48> dst_mac) {
        std.egress_spec = (bit<9>)egress_port;
        hdr.ethernet.dst = dst_mac;
    }
    action drop() { mark_to_drop(std); }
    action set_tos(bit<8> tos) { hdr.ipv4.tos = tos; }

    table routes {
        key = { hdr.ipv4.dst: lpm @name("dst_addr"); }
        actions = { forward; drop; @defaultonly NoAction; }
        default_action = NoAction();
        counters = route_counters;
        size = TINY_SIZE;
    }
    table narrow {
        key = { hdr.ipv4.proto: exact @name("key"); }
        actions = { set_tos; @defaultonly NoAction; }
        default_action = NoAction();
    }

    apply {
        if (hdr.ipv4.isValid()) {
            routes.apply();
            narrow.apply();
            bit<64> n;
            hits.read(n, 0);
            hits.write(0, n + 1);
            seen.count(0);
        } else {
            seen.count(1);
        }
    }
}

control TinyEgress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) { apply { } }
control TinyCompute(inout headers_t hdr, inout metadata_t meta) { apply { } }
control TinyDeparser(packet_out pkt, in headers_t hdr) { apply { pkt.emit(hdr.ethernet); pkt.emit(hdr.ipv4); } }

V1Switch(TinyParser(), TinyVerify(), TinyIngress(), TinyEgress(), TinyCompute(), TinyDeparser()) main;
