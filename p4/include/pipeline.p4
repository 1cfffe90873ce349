/* What every innet P4 program shares beyond parsing: the exception path, the flow key,
 * the egress, and the names every program's controls are instantiated under, so a
 * table or counter has the same P4Runtime name in a standalone NF program and in the
 * composed pipeline (p4/innet.p4): InnetIngress.<nf>.<name>.
 */
#ifndef INNET_PIPELINE_P4
#define INNET_PIPELINE_P4

#include "parsers.p4"

/* A switch has no kernel slow path: what an XDP program hands to the kernel goes to the
 * CPU port when the program is compiled with -DCPU_PORT=<port> (simple_switch_grpc
 * --cpu-port), unchanged, else it is dropped. */
@hidden action to_cpu_or_drop(inout standard_metadata_t std) {
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

/* A 32-bit fingerprint of a flow key (CRC-32). NFs derive their row, stage and slot
 * indices from it with FLOW_INDEX, a multiply-shift with an odd multiplier of their own:
 * CRCs of one key under different seeds differ by a constant, so their low bits would
 * collide together, where the middle bits of a product mix all 32 bits of the fingerprint. */
@hidden action flow_fingerprint(in flow_key_t key, out bit<32> fp) {
    hash(fp, HashAlgorithm.crc32, (bit<32>)0,
         { key.src_addr, key.dst_addr, key.src_port, key.dst_port, key.proto },
         (bit<64>)0x100000000);
}

#define FLOW_INDEX(fp, multiplier, size) \
    ((bit<32>)(((bit<64>)(fp) * (multiplier)) >> 32) & ((bit<32>)(size) - 1))

/* An address in registers: four 32-bit registers <name>_0 .. <name>_3, most significant
 * word first, because BMv2's Thrift register API carries values as signed 64-bit
 * integers (and saturates wider or larger ones). */
#define INNET_STR(x) #x
#define INNET_XSTR(x) INNET_STR(x)
#define ADDR_REGISTERS(reg, size) \
    @name(INNET_XSTR(.reg##_0)) register<bit<32>>(size) reg##_0; \
    @name(INNET_XSTR(.reg##_1)) register<bit<32>>(size) reg##_1; \
    @name(INNET_XSTR(.reg##_2)) register<bit<32>>(size) reg##_2; \
    @name(INNET_XSTR(.reg##_3)) register<bit<32>>(size) reg##_3

#define ADDR_READ(reg, value, index) { \
    bit<32> w0; bit<32> w1; bit<32> w2; bit<32> w3; \
    reg##_0.read(w0, index); reg##_1.read(w1, index); \
    reg##_2.read(w2, index); reg##_3.read(w3, index); \
    value = w0 ++ w1 ++ w2 ++ w3; }

#define ADDR_WRITE(reg, index, value) { \
    reg##_0.write(index, value[127:96]); reg##_1.write(index, value[95:64]); \
    reg##_2.write(index, value[63:32]); reg##_3.write(index, value[31:0]); }

/* The only work of the egress: a packet the forwarder (sff.p4) handed to an NF passes the
 * pipeline again, as it is now (its SI decremented), with SFF_FIELD_LIST. */
control InnetEgress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    apply {
        if (meta.sff_recirculate == 1) {
            recirculate_preserving_field_list(SFF_FIELD_LIST);
        }
    }
}

#define INNET_SWITCH V1Switch(InnetParser(), InnetVerifyChecksum(), InnetIngress(), \
                              InnetEgress(), InnetComputeChecksum(), InnetDeparser()) main

#endif /* INNET_PIPELINE_P4 */
