/* Headers and metadata shared by innet's P4 programs (v1model). */
#ifndef INNET_HEADERS_P4
#define INNET_HEADERS_P4

#include <core.p4>
#include <v1model.p4>

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_IPV6 = 0x86dd;
const bit<16> ETHERTYPE_NSH = 0x894f;

/* NSH (RFC 8300) next protocols the service function forwarder carries */
const bit<8> NSH_NP_IPV4 = 1;
const bit<8> NSH_NP_IPV6 = 2;

const bit<8> IP_PROTO_HOPOPT = 0;
const bit<8> IP_PROTO_TCP = 6;
const bit<8> IP_PROTO_UDP = 17;
const bit<8> IP_PROTO_IPV6_ROUTE = 43;
const bit<8> IP_PROTO_IPV6_FRAG = 44;
const bit<8> IP_PROTO_IPV6_OPTS = 60;
const bit<8> IP_PROTO_SCTP = 132;
const bit<8> IP_PROTO_UDPLITE = 136;

/* IPv6 extension headers skipped on the way to the transport header, as in
 * ebpf/include/flowkey.h: past this many the flow is keyed by the last one, without ports. */
#define IPV6_MAX_EXT 4

header ethernet_t {
    bit<48> dstAddr;
    bit<48> srcAddr;
    bit<16> etherType;
}

/* NSH base header and service path header (RFC 8300); `len` counts 4-byte words of the
 * whole NSH, context headers included. */
header nsh_t {
    bit<2>  version;
    bit<1>  oam;
    bit<1>  unused1;
    bit<6>  ttl;
    bit<6>  len;
    bit<4>  unused2;
    bit<4>  md_type;
    bit<8>  next_proto;
    bit<24> spi;
    bit<8>  si;
}

/* MD type 2 context headers, carried through unread: up to the 63 words `len` allows,
 * less the 2 of the fixed part. */
header nsh_context_t {
    varbit<1952> data;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> totalLen;
    bit<16> identification;
    bit<3>  flags;
    bit<13> fragOffset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdrChecksum;
    bit<32> srcAddr;
    bit<32> dstAddr;
}

/* Up to 40 bytes of options (IHL 6..15), kept so they are emitted again and the
 * transport ports behind them can be read. */
header ipv4_options_t {
    varbit<320> options;
}

header ipv6_t {
    bit<4>   version;
    bit<8>   trafficClass;
    bit<20>  flowLabel;
    bit<16>  payloadLen;
    bit<8>   nextHdr;
    bit<8>   hopLimit;
    bit<128> srcAddr;
    bit<128> dstAddr;
}

/* Hop-by-hop, routing, destination options and fragment headers: 8 bytes, then
 * hdrExtLen * 8 more (0 for a fragment header, whose offset sits in `offsetFlags`). */
header ipv6_ext_t {
    bit<8>  nextHdr;
    bit<8>  hdrExtLen;
    bit<16> offsetFlags;
    bit<32> rest;
    varbit<16320> more;
}

/* The first 4 bytes of TCP, UDP, SCTP and UDP-Lite: all the NFs read of the transport
 * header. Extracting only these keeps a segment truncated after its ports keyed, as on XDP. */
header l4_ports_t {
    bit<16> srcPort;
    bit<16> dstPort;
}

struct headers_t {
    ethernet_t              ethernet;
    nsh_t                   nsh;
    nsh_context_t           nsh_context;
    ipv4_t                  ipv4;
    ipv4_options_t          ipv4_options;
    ipv6_t                  ipv6;
    ipv6_ext_t[IPV6_MAX_EXT] ipv6_ext;
    l4_ports_t              ports;
}

/* The flow key of ebpf/include/flowkey.h: IPv4 addresses as IPv4-mapped IPv6, ports 0
 * without ports, for non-first fragments, and in key mode 1. */
struct flow_key_t {
    bit<128> src_addr;
    bit<128> dst_addr;
    bit<16>  src_port;
    bit<16>  dst_port;
    bit<8>   proto;
}

/* Verdicts of the router, in the order of nfs/nfrouter.yaml `verdicts`. */
typedef bit<32> verdict_t;
const verdict_t VERDICT_FORWARDED = 0;
const verdict_t VERDICT_PASS_NOT_IP = 1;
const verdict_t VERDICT_PASS_MALFORMED = 2;
const verdict_t VERDICT_PASS_IP_OPTIONS = 3;
const verdict_t VERDICT_PASS_TTL_EXPIRED = 4;
const verdict_t VERDICT_PASS_NO_ROUTE = 5;
const verdict_t VERDICT_PASS_LOCAL = 6;
const verdict_t VERDICT_PASS_TOO_BIG = 7;
const verdict_t VERDICT_PASS_NO_PORT = 8;
const verdict_t VERDICT_DROP_OTHER_HOST = 9;
const verdict_t VERDICT_PASS_L2_BROADCAST = 10;
const verdict_t VERDICT_DROP_MARTIAN_SOURCE = 11;
const verdict_t VERDICT_PASS_LOCAL_SOURCE = 12;
const verdict_t VERDICT_PASS_HAIRPIN = 13;
#define VERDICT_COUNT 14

const bit<8> PRECISION_FIELD_LIST = 1;   /* carried by resubmit (PRECISION's second pass) */
const bit<8> SFF_FIELD_LIST = 2;         /* carried by recirculation (the forwarder's next pass) */

/* What the service function forwarder (sff.p4) decided for a packet's pass */
const bit<2> SFF_PASS = 0;       /* not its packet, or decapsulated: on to the port's NFs and router */
const bit<2> SFF_TO_NF = 1;      /* an NF behind it runs; then the packet passes again (recirculated) */
const bit<2> SFF_DONE = 2;       /* forwarded to the next node, or dropped */

struct metadata_t {
    /* filled by the parser */
    bit<8>     l4_proto;         /* protocol after the IPv6 extension headers */
    bit<8>     ipv6_ext_count;
    /* filled by FlowKey */
    bit<1>     has_flow;         /* 0: not IP, or truncated before what the key needs */
    flow_key_t flow;             /* 5-tuple; measurement NFs drop the ports in key mode 1 */
    bit<8>     dscp;
    /* the composed pipeline's enabled NFs (innet.p4) */
    bit<8>     nfs;
    /* PRECISION's takeover, decided on a packet's first pass and carried by resubmit to
     * its second (or, when the forwarder changed the packet, by recirculation): the slot to
     * take over and its new counter */
    @field_list(PRECISION_FIELD_LIST, SFF_FIELD_LIST)
    bit<1>     precision_takeover;
    @field_list(PRECISION_FIELD_LIST, SFF_FIELD_LIST)
    bit<32>    precision_slot;
    @field_list(PRECISION_FIELD_LIST, SFF_FIELD_LIST)
    bit<64>    precision_count;
    /* the port the packet came in on: BMv2 resets standard metadata on resubmit and
     * recirculation */
    @field_list(PRECISION_FIELD_LIST, SFF_FIELD_LIST)
    bit<9>     ingress_port;
    /* the service function forwarder's decision for this pass (sff.p4) */
    bit<2>     sff_outcome;
    bit<8>     sff_nfs;          /* SFF_TO_NF: the enable bit of the NF that runs */
    bit<1>     sff_touched;      /* it classified or dispatched the packet in this pass */
    bit<1>     sff_recirculate;  /* egress: recirculate with SFF_FIELD_LIST */
    /* carried to the next pass */
    @field_list(SFF_FIELD_LIST)
    bit<1>     sff_recirculated; /* this pass is a recirculation */
    @field_list(SFF_FIELD_LIST)
    bit<1>     sff_bypass;       /* past the forwarder already: the NFs' second pass */
    @field_list(SFF_FIELD_LIST)
    bit<3>     sff_priority;     /* a prio hop's queue, for the pass that sends the packet */
    /* the router asks computeChecksum for a new IPv4 checksum only on what it rewrote */
    bit<1>     ipv4_rewritten;
}

#endif /* INNET_HEADERS_P4 */
