/* What every innet P4 program shares beyond parsing: the exception path, the flow key,
 * the (empty) egress, and the names every program's controls are instantiated under, so a
 * table or counter has the same P4Runtime name in a standalone NF program and in the
 * composed pipeline (p4/innet.p4): InnetIngress.<nf>.<name>.
 */
#ifndef INNET_PIPELINE_P4
#define INNET_PIPELINE_P4

#include "parsers.p4"

/* A switch has no kernel slow path: what an XDP program hands to the kernel goes to the
 * CPU port when the program is compiled with -DCPU_PORT=<port> (simple_switch_grpc
 * --cpu-port), unchanged, else it is dropped. */
action to_cpu_or_drop(inout standard_metadata_t std) {
#ifdef CPU_PORT
    std.egress_spec = CPU_PORT;
#else
    mark_to_drop(std);
#endif
}

/* meta.flow, meta.has_flow and meta.dscp as ebpf/include/flowkey.h fills them (5-tuple);
 * has_flow is 0 for non-IP packets and for packets the parser found truncated. */
control FlowKey(in headers_t hdr, inout metadata_t meta, in standard_metadata_t std) {
    apply {
        meta.has_flow = 0;
        if (hdr.ipv4.isValid() && hdr.ipv4.version == 4 && hdr.ipv4.ihl >= 5 &&
            hdr.ipv4.totalLen >= (bit<16>)hdr.ipv4.ihl * 4) {
            meta.has_flow = 1;
            meta.flow.src_addr = 0xffff00000000 | (bit<128>)hdr.ipv4.srcAddr;
            meta.flow.dst_addr = 0xffff00000000 | (bit<128>)hdr.ipv4.dstAddr;
            meta.dscp = (bit<8>)hdr.ipv4.diffserv[7:2];
        } else if (hdr.ipv6.isValid() && hdr.ipv6.version == 6) {
            meta.has_flow = 1;
            meta.flow.src_addr = hdr.ipv6.srcAddr;
            meta.flow.dst_addr = hdr.ipv6.dstAddr;
            meta.dscp = (bit<8>)hdr.ipv6.trafficClass[7:2];
        }
        if (std.parser_error != error.NoError) {
            meta.has_flow = 0;
        }
        meta.flow.proto = meta.l4_proto;
        if (hdr.ports.isValid()) {
            meta.flow.src_port = hdr.ports.srcPort;
            meta.flow.dst_port = hdr.ports.dstPort;
        }
    }
}

control InnetEgress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    apply { }
}

#define INNET_SWITCH V1Switch(InnetParser(), InnetVerifyChecksum(), InnetIngress(), \
                              InnetEgress(), InnetComputeChecksum(), InnetDeparser()) main

#endif /* INNET_PIPELINE_P4 */
