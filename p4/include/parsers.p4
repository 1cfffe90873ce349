/* Parser, deparser and checksum controls shared by innet's P4 programs (v1model).
 *
 * The parser reads what the NFs need: Ethernet, an NSH (whose inner packet the NFs then
 * see, as on XDP), IPv4 (with options) or IPv6 (with up to
 * IPV6_MAX_EXT extension headers), and the transport ports of the first fragment. A frame
 * too short for a header stops the parser with standard_metadata.parser_error set; the
 * ingress still sees it (BMv2 does not drop on parser errors) and the NFs judge it.
 */
#ifndef INNET_PARSERS_P4
#define INNET_PARSERS_P4

#include "headers.p4"

parser InnetParser(packet_in pkt, out headers_t hdr, inout metadata_t meta,
                   inout standard_metadata_t std) {
    state start {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) {
            ETHERTYPE_IPV4: parse_ipv4;
            ETHERTYPE_IPV6: parse_ipv6;
            ETHERTYPE_NSH: parse_nsh;
            default: accept;
        }
    }

    /* a version other than 0 or a length short of the fixed part: the forwarder judges it */
    state parse_nsh {
        pkt.extract(hdr.nsh);
        transition select(hdr.nsh.version, hdr.nsh.len) {
            (0, 0 .. 1): accept;
            (0, 2): parse_nsh_inner;
            (0, _): parse_nsh_context;
            default: accept;
        }
    }

    state parse_nsh_context {
        pkt.extract(hdr.nsh_context, ((bit<32>)hdr.nsh.len - 2) * 32);
        transition parse_nsh_inner;
    }

    state parse_nsh_inner {
        transition select(hdr.nsh.next_proto) {
            NSH_NP_IPV4: parse_ipv4;
            NSH_NP_IPV6: parse_ipv6;
            default: accept;
        }
    }

    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        meta.l4_proto = hdr.ipv4.protocol;
        transition select(hdr.ipv4.version, hdr.ipv4.ihl) {
            (4, 5): parse_ipv4_payload;
            (4, 0 .. 4): accept;        /* malformed: the NFs see the bad IHL */
            (4, _): parse_ipv4_options;
            default: accept;
        }
    }

    state parse_ipv4_options {
        pkt.extract(hdr.ipv4_options, ((bit<32>)hdr.ipv4.ihl - 5) * 32);
        transition parse_ipv4_payload;
    }

    /* only the first fragment carries the transport header */
    state parse_ipv4_payload {
        transition select(hdr.ipv4.fragOffset) {
            0: parse_l4;
            default: accept;
        }
    }

    state parse_ipv6 {
        pkt.extract(hdr.ipv6);
        meta.l4_proto = hdr.ipv6.nextHdr;
        transition select(hdr.ipv6.version) {
            6: parse_ipv6_next;
            default: accept;
        }
    }

    state parse_ipv6_next {
        transition select(meta.ipv6_ext_count, meta.l4_proto) {
            (IPV6_MAX_EXT, _): parse_l4;
            (_, IP_PROTO_HOPOPT): parse_ipv6_ext;
            (_, IP_PROTO_IPV6_ROUTE): parse_ipv6_ext;
            (_, IP_PROTO_IPV6_OPTS): parse_ipv6_ext;
            (_, IP_PROTO_IPV6_FRAG): parse_ipv6_frag;
            default: parse_l4;
        }
    }

    state parse_ipv6_ext {
        bit<16> next_and_len = pkt.lookahead<bit<16>>();
        pkt.extract(hdr.ipv6_ext.next, (bit<32>)next_and_len[7:0] * 64);
        meta.l4_proto = hdr.ipv6_ext.last.nextHdr;
        meta.ipv6_ext_count = meta.ipv6_ext_count + 1;
        transition parse_ipv6_next;
    }

    state parse_ipv6_frag {
        pkt.extract(hdr.ipv6_ext.next, 0);
        meta.l4_proto = hdr.ipv6_ext.last.nextHdr;
        meta.ipv6_ext_count = meta.ipv6_ext_count + 1;
        transition select(hdr.ipv6_ext.last.offsetFlags[15:3]) {
            0: parse_ipv6_next;
            default: accept;            /* a later fragment: no transport header */
        }
    }

    state parse_l4 {
        transition select(meta.l4_proto) {
            IP_PROTO_TCP: parse_ports;
            IP_PROTO_UDP: parse_ports;
            IP_PROTO_SCTP: parse_ports;
            IP_PROTO_UDPLITE: parse_ports;
            default: accept;
        }
    }

    state parse_ports {
        pkt.extract(hdr.ports);
        transition accept;
    }
}

/* Sets standard_metadata.checksum_error for an IPv4 header (without options) whose
 * checksum is wrong; the router counts it as malformed. */
control InnetVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        verify_checksum(hdr.ipv4.isValid() && hdr.ipv4.ihl == 5,
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.srcAddr, hdr.ipv4.dstAddr },
            hdr.ipv4.hdrChecksum, HashAlgorithm.csum16);
    }
}

/* A new checksum only for a header the router rewrote: every other packet leaves with
 * the bytes it came with. Computed in full, it equals the kernel's incremental update
 * (ip_decrease_ttl) on a valid header: both give the one value in 0..0xfffe. */
control InnetComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(meta.ipv4_rewritten == 1,
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.srcAddr, hdr.ipv4.dstAddr },
            hdr.ipv4.hdrChecksum, HashAlgorithm.csum16);
    }
}

control InnetDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.nsh);
        pkt.emit(hdr.nsh_context);
        pkt.emit(hdr.ipv4);
        pkt.emit(hdr.ipv4_options);
        pkt.emit(hdr.ipv6);
        pkt.emit(hdr.ipv6_ext);
        pkt.emit(hdr.ports);
    }
}

#endif /* INNET_PARSERS_P4 */
