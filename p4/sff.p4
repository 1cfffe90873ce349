/* Service function forwarder on BMv2 (IETF NSH, RFC 8300): the contract is nfs/sff.yaml,
 * the behaviour ebpf/sff.bpf.c's.
 *
 * A plain IP packet that matches sfc_classify gets an NSH (MD type 2, no context headers,
 * TTL 63) between its Ethernet header and IP packet. Every NSH frame, arriving or just
 * encapsulated, is dispatched on (SPI, SI) by sfc_hops: to_nf decrements SI and names the
 * NF behind the forwarder (sfc_nfs: slot -> the NF's enable bit, written by the controller
 * as it deploys an instance behind the forwarder); forward rewrites the MACs, decrements the
 * NSH TTL and sends the frame to the next node; decap removes the NSH, and the packet goes
 * on to the router. What it decides is meta.sff_outcome; running the NF and passing the
 * packet again (recirculation: BMv2 applies a table once per pass) is the composed
 * pipeline's part (innet.p4). sfc_classify's protocol and ports are ternary: the controller
 * writes a 0 there as a wildcard, with priorities that give XDP's lookup order.
 */
#include "include/pipeline.p4"

#ifndef SFF_MAX_PATHS
#define SFF_MAX_PATHS 1024
#endif
#ifndef SFF_MAX_NFS
#define SFF_MAX_NFS 8
#endif
/* BMv2 knows no port MTU: an inner IP packet and its NSH longer than this are too_big.
 * 1508: the testbed's router-to-router links (hosts' 1500 and the 8-byte NSH). */
#ifndef SFF_MTU
#define SFF_MTU 1508
#endif

/* Outcomes, in the order of nfs/sff.yaml `verdicts` */
const bit<32> SFF_CLASSIFIED = 0;
const bit<32> SFF_TO_NF_COUNT = 1;
const bit<32> SFF_FORWARDED = 2;
const bit<32> SFF_DECAPSULATED = 3;
const bit<32> SFF_UNCLASSIFIED = 4;
const bit<32> SFF_NOT_IP = 5;
const bit<32> SFF_NO_HOP = 6;
const bit<32> SFF_NO_NF = 7;
const bit<32> SFF_TTL_EXPIRED = 8;
const bit<32> SFF_TOO_BIG = 9;
const bit<32> SFF_MALFORMED = 11;
#define SFF_VERDICT_COUNT 12

#define NSH_MIN_WORDS 2

control Sff(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    counter(SFF_VERDICT_COUNT, CounterType.packets) verdicts;
    direct_counter(CounterType.packets_and_bytes) hop_counters;

    bit<8> next_proto = 0;     /* the NSH next protocol of the IP packet encapsulated */
    bit<32> nf_slot = 0;
    bit<32> next_port = 0;
    bit<48> next_dst_mac = 0;
    bit<48> next_src_mac = 0;

    action encap(bit<32> spi, bit<8> si) {   /* spi: 24 bits, as the catalog bounds it */
        hdr.nsh.setValid();
        hdr.nsh.version = 0;
        hdr.nsh.oam = 0;
        hdr.nsh.unused1 = 0;
        hdr.nsh.ttl = 63;
        hdr.nsh.len = NSH_MIN_WORDS;
        hdr.nsh.unused2 = 0;
        hdr.nsh.md_type = 2;
        hdr.nsh.next_proto = next_proto;
        hdr.nsh.spi = spi[23:0];
        hdr.nsh.si = si;
        hdr.ethernet.etherType = ETHERTYPE_NSH;
    }

    table sfc_classify {
        key = {
            meta.flow.src_addr: exact @name("src_addr");
            meta.flow.dst_addr: exact @name("dst_addr");
            meta.flow.proto: ternary @name("proto");
            meta.flow.src_port: ternary @name("src_port");
            meta.flow.dst_port: ternary @name("dst_port");
        }
        actions = { encap; @defaultonly NoAction; }
        default_action = NoAction();
        size = SFF_MAX_PATHS;
    }

    action to_nf(bit<32> slot) {
        nf_slot = slot;
    }

    action forward(bit<32> egress_port, bit<48> dst_mac, bit<48> src_mac) {
        next_port = egress_port;
        next_dst_mac = dst_mac;
        next_src_mac = src_mac;
    }

    action decap() { }

    table sfc_hops {
        key = {
            (bit<32>)hdr.nsh.spi: exact @name("spi");   /* the catalog's u32 */
            hdr.nsh.si: exact @name("si");
        }
        actions = { to_nf; forward; decap; @defaultonly NoAction; }
        default_action = NoAction();
        counters = hop_counters;
        size = SFF_MAX_PATHS;
    }

    action run_nf(bit<8> nfs) {
        meta.sff_nfs = nfs;
    }

    /* slot -> the NF behind the forwarder there (its enable bit); the controller's own */
    table sfc_nfs {
        key = { nf_slot: exact @name("slot"); }
        actions = { run_nf; @defaultonly NoAction; }
        default_action = NoAction();
        size = SFF_MAX_NFS;
    }

    @hidden action done(bit<32> verdict) {
        verdicts.count(verdict);
        meta.sff_outcome = SFF_DONE;
    }

    @hidden action drop(bit<32> verdict) {
        done(verdict);
        mark_to_drop(std);
    }

    apply {
        meta.sff_outcome = SFF_PASS;
        bool dispatch = false;
        if (!hdr.ethernet.isValid()) {
            verdicts.count(SFF_NOT_IP);
        } else if (hdr.ethernet.etherType == ETHERTYPE_NSH) {
            dispatch = true;
        } else if (hdr.ethernet.etherType == ETHERTYPE_IPV4 || hdr.ethernet.etherType == ETHERTYPE_IPV6) {
            next_proto = hdr.ethernet.etherType == ETHERTYPE_IPV4 ? NSH_NP_IPV4 : NSH_NP_IPV6;
            if (meta.has_flow == 1 && sfc_classify.apply().hit) {
                verdicts.count(SFF_CLASSIFIED);
                dispatch = true;
            } else {
                verdicts.count(SFF_UNCLASSIFIED);
            }
        } else {
            verdicts.count(SFF_NOT_IP);
        }
        if (!dispatch) {
            return;
        }
        meta.sff_touched = 1;
        if (!hdr.nsh.isValid() || hdr.nsh.version != 0 || hdr.nsh.len < NSH_MIN_WORDS) {
            drop(SFF_MALFORMED);
            return;
        }
        switch (sfc_hops.apply().action_run) {
            to_nf: {
                if (hdr.nsh.si == 0) {
                    drop(SFF_NO_HOP);
                } else {
                    hdr.nsh.si = hdr.nsh.si - 1;   /* RFC 8300: each service function decrements SI */
                    if (sfc_nfs.apply().hit) {
                        verdicts.count(SFF_TO_NF_COUNT);
                        meta.sff_outcome = SFF_TO_NF;
                    } else {
                        drop(SFF_NO_NF);
                    }
                }
            }
            forward: {
                /* the TTL falls by one per node the frame leaves (0 counts as 64) */
                bit<6> ttl = hdr.nsh.ttl - 1;
                bit<32> size = (bit<32>)hdr.nsh.len * 4;
                if (hdr.ipv4.isValid()) {
                    size = size + (bit<32>)hdr.ipv4.totalLen;
                } else if (hdr.ipv6.isValid()) {
                    size = size + 40 + (bit<32>)hdr.ipv6.payloadLen;
                }
                if (ttl == 0) {
                    drop(SFF_TTL_EXPIRED);
                } else if (size > SFF_MTU) {
                    drop(SFF_TOO_BIG);
                } else {
                    hdr.nsh.ttl = ttl;
                    hdr.ethernet.dstAddr = next_dst_mac;
                    hdr.ethernet.srcAddr = next_src_mac;
                    std.egress_spec = (bit<9>)next_port;
                    done(SFF_FORWARDED);
                }
            }
            decap: {
                if (hdr.nsh.next_proto == NSH_NP_IPV4) {
                    hdr.ethernet.etherType = ETHERTYPE_IPV4;
                } else if (hdr.nsh.next_proto == NSH_NP_IPV6) {
                    hdr.ethernet.etherType = ETHERTYPE_IPV6;
                }
                if (hdr.ethernet.etherType == ETHERTYPE_NSH) {
                    drop(SFF_MALFORMED);
                } else {
                    hdr.nsh.setInvalid();
                    hdr.nsh_context.setInvalid();
                    verdicts.count(SFF_DECAPSULATED);
                }
            }
            default: {
                drop(SFF_NO_HOP);
            }
        }
    }
}

#ifndef INNET_COMPOSED
/* Standalone, the forwarder runs no NFs and no router: what it would hand on goes to the
 * CPU port or is dropped. The composed pipeline (innet.p4) runs both. */
control InnetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    FlowKey() flow_key;
    Sff() sff;
    apply {
        flow_key.apply(hdr, meta, std);
        sff.apply(hdr, meta, std);
        if (meta.sff_outcome != SFF_DONE) {
            to_cpu_or_drop(std);
        }
    }
}

INNET_SWITCH;
#endif
