/* PRECISION heavy-hitter detection on BMv2 (Ben Basat, Chen, Einziger, Rottenstreich,
 * IEEE/ACM ToN 2020), in the compact layout of ebpf/precision.bpf.c; the contract is
 * nfs/precision.yaml.
 *
 * Stages: PRECISION_STAGES arrays of PRECISION_SLOTS (fingerprint, 32-bit packet counter)
 * slots; the fingerprint is the flow key's CRC-32 (never 0: 0 marks a free slot), stage
 * indices are multiply-shifts of it. A packet whose fingerprint one of its slots holds
 * increments that counter (later stages are skipped). A packet of an untracked flow notes
 * the smallest counter `min` among its slots (the first stage on a tie) and, with
 * probability exactly 1/(min+1) (v1model random() over 0..min), is resubmitted, as the
 * paper recirculates it: on its second pass through the ingress it writes its fingerprint
 * and min+1 into that slot, then goes on through the pipeline like any packet (the first
 * pass goes nowhere). The slot and the counter travel with the packet in field list
 * PRECISION_FIELD_LIST.
 *
 * Key table: PRECISION_KEY_SETS sets of PRECISION_KEY_WAYS (flow key, counter) entries; a
 * flow may sit in either of two sets picked by its fingerprint (as ebpf/precision.bpf.c
 * picks them). A flow whose stage counter moved (counted, or taken over on the second pass)
 * writes it into its entry, or replaces the entry of its two sets with the smallest counter
 * when its own is larger.
 */
#include "include/pipeline.p4"

#ifndef PRECISION_STAGES
#define PRECISION_STAGES 2
#endif
#ifndef PRECISION_SLOTS
#define PRECISION_SLOTS 1024
#endif
#ifndef PRECISION_KEY_SETS
#define PRECISION_KEY_SETS 64
#endif
#ifndef FLOW_KEY_MODE
#define FLOW_KEY_MODE 0
#endif
#define PRECISION_KEY_WAYS 8

#if PRECISION_STAGES < 1 || PRECISION_STAGES > 4 || (PRECISION_SLOTS & (PRECISION_SLOTS - 1)) || \
    PRECISION_KEY_SETS < 1
#error "PRECISION_STAGES must be 1..4, PRECISION_SLOTS a power of two and PRECISION_KEY_SETS at least 1"
#endif

#define PRECISION_CELLS (PRECISION_STAGES * PRECISION_SLOTS)
#define PRECISION_KEY_CELLS (PRECISION_KEY_SETS * PRECISION_KEY_WAYS)
#define PRECISION_KEY_REMIX 0x9e3779b1
#define PRECISION_COUNTER_MAX 0xffffffff

/* One stage: read the flow's slot; count there if it holds the flow, else keep the minimum. */
#define PRECISION_VISIT(stage, multiplier) \
    if (!tracked && (stage) < PRECISION_STAGES) { \
        read_slot((stage) * PRECISION_SLOTS + FLOW_INDEX(fp, multiplier, PRECISION_SLOTS)); \
        if (held_fp == fp) { \
            count = held_packets == PRECISION_COUNTER_MAX ? held_packets : held_packets + 1; \
            stage_packets.write(slot, count); \
            tracked = true; \
        } else if (held_packets < min_packets) { \
            min_packets = held_packets; \
            min_slot = slot; \
        } \
    }

/* One way of one of the flow's key sets: note the counter if it holds the flow, else keep
 * the minimum. */
#define PRECISION_KEY_VISIT(base, way) \
    if (!key_done) { \
        read_key((base) + (way)); \
        if (held_is_flow) { \
            packets.write(key_index, count); \
            key_done = true; \
        } else if (held_count < key_min) { \
            key_min = held_count; \
            key_min_index = key_index; \
        } \
    }

control Precision(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    @name(".prec_fingerprint") register<bit<32>>(PRECISION_CELLS) fingerprint;   /* [stage][slot] */
    @name(".prec_stage_packets") register<bit<32>>(PRECISION_CELLS) stage_packets;
    ADDR_REGISTERS(prec_src_addr, PRECISION_KEY_CELLS);      /* [set][way] */
    ADDR_REGISTERS(prec_dst_addr, PRECISION_KEY_CELLS);
    @name(".prec_src_port") register<bit<16>>(PRECISION_KEY_CELLS) src_port;
    @name(".prec_dst_port") register<bit<16>>(PRECISION_KEY_CELLS) dst_port;
    @name(".prec_proto") register<bit<8>>(PRECISION_KEY_CELLS) proto;
    @name(".prec_packets") register<bit<32>>(PRECISION_KEY_CELLS) packets;

    flow_key_t key;
    bit<32> fp;
    bit<32> slot;
    bit<32> held_fp;
    bit<32> held_packets;
    bool tracked = false;
    bit<32> count = 0; /* the flow's stage counter after this packet */
    bit<32> min_packets = PRECISION_COUNTER_MAX;
    bit<32> min_slot = 0;
    bit<32> key_base;
    bit<32> key_base2;
    bit<32> key_index;
    bool held_is_flow;
    bit<32> held_count;
    bool key_done = false;
    bit<32> key_min = PRECISION_COUNTER_MAX;
    bit<32> key_min_index = 0;

    @hidden action read_slot(bit<32> index) {
        slot = index;
        fingerprint.read(held_fp, index);
        stage_packets.read(held_packets, index);
    }

    @hidden action read_key(bit<32> index) {
        flow_key_t held;
        key_index = index;
        ADDR_READ(prec_src_addr, held.src_addr, index);
        ADDR_READ(prec_dst_addr, held.dst_addr, index);
        src_port.read(held.src_port, index);
        dst_port.read(held.dst_port, index);
        proto.read(held.proto, index);
        packets.read(held_count, index);
        held_is_flow = held.src_addr == key.src_addr && held.dst_addr == key.dst_addr &&
                       held.src_port == key.src_port && held.dst_port == key.dst_port &&
                       held.proto == key.proto;
    }

    @hidden action write_key(bit<32> index) {
        ADDR_WRITE(prec_src_addr, index, key.src_addr);
        ADDR_WRITE(prec_dst_addr, index, key.dst_addr);
        src_port.write(index, key.src_port);
        dst_port.write(index, key.dst_port);
        proto.write(index, key.proto);
        packets.write(index, count);
    }

    @hidden action take_over() {
        fingerprint.write(meta.precision_slot, fp);
        stage_packets.write(meta.precision_slot, count);
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
        flow_fingerprint(key, fp);
        if (fp == 0) {
            fp = 1;
        }
        if (meta.precision_takeover == 1) {     /* the second pass */
            count = (bit<32>)meta.precision_count;
            take_over();
            tracked = true;
        } else {
            PRECISION_VISIT(0, 0x9e3779b1)
            PRECISION_VISIT(1, 0x85ebca6b)
            PRECISION_VISIT(2, 0xc2b2ae35)
            PRECISION_VISIT(3, 0x27d4eb2f)
            if (!tracked) {
                bit<32> coin;
                random(coin, 0, min_packets);
                if (coin == 0 && min_packets != PRECISION_COUNTER_MAX) {
                    meta.precision_takeover = 1;
                    meta.precision_slot = min_slot;
                    meta.precision_count = (bit<64>)min_packets + 1;
                    /* a packet the forwarder changed passes again as it is now: the
                     * composed pipeline recirculates it (resubmit would take the frame
                     * as it came in) */
                    if (meta.sff_touched == 0) {
                        resubmit_preserving_field_list(PRECISION_FIELD_LIST);
                    }
                }
            }
        }
        if (tracked) {   /* the counter moved: the key table hears of it */
            key_base = (bit<32>)(((bit<64>)fp * PRECISION_KEY_SETS) >> 32) * PRECISION_KEY_WAYS;
            key_base2 = (bit<32>)(((bit<64>)(fp * PRECISION_KEY_REMIX) * PRECISION_KEY_SETS) >> 32) *
                        PRECISION_KEY_WAYS;
            PRECISION_KEY_VISIT(key_base, 0)
            PRECISION_KEY_VISIT(key_base, 1)
            PRECISION_KEY_VISIT(key_base, 2)
            PRECISION_KEY_VISIT(key_base, 3)
            PRECISION_KEY_VISIT(key_base, 4)
            PRECISION_KEY_VISIT(key_base, 5)
            PRECISION_KEY_VISIT(key_base, 6)
            PRECISION_KEY_VISIT(key_base, 7)
            PRECISION_KEY_VISIT(key_base2, 0)
            PRECISION_KEY_VISIT(key_base2, 1)
            PRECISION_KEY_VISIT(key_base2, 2)
            PRECISION_KEY_VISIT(key_base2, 3)
            PRECISION_KEY_VISIT(key_base2, 4)
            PRECISION_KEY_VISIT(key_base2, 5)
            PRECISION_KEY_VISIT(key_base2, 6)
            PRECISION_KEY_VISIT(key_base2, 7)
            if (!key_done && key_min < count) {
                write_key(key_min_index);
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
