/* PRECISION heavy-hitter detection on BMv2 (Ben Basat, Chen, Einziger, Rottenstreich,
 * IEEE/ACM ToN 2020); the contract is nfs/precision.yaml.
 *
 * PRECISION_STAGES arrays of PRECISION_SLOTS (flow key, packet counter) slots. A packet of a
 * flow tracked in one of its slots increments that counter (later stages are skipped). A
 * packet of an untracked flow notes the smallest counter `min` among its slots (the first
 * stage on a tie) and, with probability exactly 1/(min+1) (v1model random() over 0..min),
 * is resubmitted, as the paper recirculates it: on its second pass through the ingress
 * it writes its key and min+1 into that slot, then goes on through the pipeline like any
 * packet (the first pass goes nowhere). The slot and the counter travel with the packet
 * in field list PRECISION_FIELD_LIST.
 */
#include "include/pipeline.p4"

#ifndef PRECISION_STAGES
#define PRECISION_STAGES 2
#endif
#ifndef PRECISION_SLOTS
#define PRECISION_SLOTS 1024
#endif
#ifndef FLOW_KEY_MODE
#define FLOW_KEY_MODE 0
#endif

#if PRECISION_STAGES < 1 || PRECISION_STAGES > 4 || (PRECISION_SLOTS & (PRECISION_SLOTS - 1))
#error "PRECISION_STAGES must be 1..4 and PRECISION_SLOTS a power of two"
#endif

#define PRECISION_CELLS (PRECISION_STAGES * PRECISION_SLOTS)

/* One stage: read the flow's slot; count there if it holds the flow, else keep the minimum. */
#define PRECISION_VISIT(stage, multiplier) \
    if (!tracked && (stage) < PRECISION_STAGES) { \
        read_slot((stage) * PRECISION_SLOTS + FLOW_INDEX(fp, multiplier, PRECISION_SLOTS)); \
        if (held_is_flow) { \
            packets.write(slot, held_packets + 1); \
            tracked = true; \
        } else if (held_packets < min_packets) { \
            min_packets = held_packets; \
            min_slot = slot; \
        } \
    }

control Precision(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    ADDR_REGISTERS(prec_src_addr, PRECISION_CELLS);      /* [stage][slot] */
    ADDR_REGISTERS(prec_dst_addr, PRECISION_CELLS);
    @name(".prec_src_port") register<bit<16>>(PRECISION_CELLS) src_port;
    @name(".prec_dst_port") register<bit<16>>(PRECISION_CELLS) dst_port;
    @name(".prec_proto") register<bit<8>>(PRECISION_CELLS) proto;
    @name(".prec_packets") register<bit<64>>(PRECISION_CELLS) packets;

    flow_key_t key;
    bit<32> fp;
    bit<32> slot;
    bool held_is_flow;
    bit<64> held_packets;
    bool tracked = false;
    bit<64> min_packets = 0xffffffffffffffff;
    bit<32> min_slot = 0;

    @hidden action read_slot(bit<32> index) {
        flow_key_t held;
        slot = index;
        ADDR_READ(prec_src_addr, held.src_addr, index);
        ADDR_READ(prec_dst_addr, held.dst_addr, index);
        src_port.read(held.src_port, index);
        dst_port.read(held.dst_port, index);
        proto.read(held.proto, index);
        packets.read(held_packets, index);
        held_is_flow = held.src_addr == key.src_addr && held.dst_addr == key.dst_addr &&
                       held.src_port == key.src_port && held.dst_port == key.dst_port &&
                       held.proto == key.proto;
    }

    @hidden action take_over() {
        ADDR_WRITE(prec_src_addr, meta.precision_slot, key.src_addr);
        ADDR_WRITE(prec_dst_addr, meta.precision_slot, key.dst_addr);
        src_port.write(meta.precision_slot, key.src_port);
        dst_port.write(meta.precision_slot, key.dst_port);
        proto.write(meta.precision_slot, key.proto);
        packets.write(meta.precision_slot, meta.precision_count);
    }

    apply {
        if (meta.has_flow == 0) {
            return;
        }
        key = meta.flow;
        if (FLOW_KEY_MODE == 1) {   /* address pair: no ports */
            key.src_port = 0;
            key.dst_port = 0;
        }
        if (meta.precision_takeover == 1) {     /* the second pass */
            take_over();
        } else {
            flow_fingerprint(key, fp);
            PRECISION_VISIT(0, 0x9e3779b1)
            PRECISION_VISIT(1, 0x85ebca6b)
            PRECISION_VISIT(2, 0xc2b2ae35)
            PRECISION_VISIT(3, 0x27d4eb2f)
            if (!tracked) {
                bit<64> coin;
                random(coin, 0, min_packets);
                if (coin == 0) {
                    meta.precision_takeover = 1;
                    meta.precision_slot = min_slot;
                    meta.precision_count = min_packets + 1;
                    resubmit_preserving_field_list(PRECISION_FIELD_LIST);
                }
            }
        }
    }
}

#ifndef INNET_COMPOSED
/* Standalone, PRECISION only measures: what it saw goes to the CPU port or is dropped.
 * The composed pipeline (innet.p4) forwards it with the router. */
control InnetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    FlowKey() flow_key;
    Precision() precision;
    apply {
        flow_key.apply(hdr, meta, std);
        precision.apply(hdr, meta, std);
        to_cpu_or_drop(std);
    }
}

INNET_SWITCH;
#endif
