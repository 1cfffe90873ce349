/* Count-Min sketch with heavy-hitter candidates on BMv2; the contract is nfs/cms.yaml,
 * the packet behaviour that of ebpf/cms.bpf.c.
 *
 * CMS_ROWS rows of CMS_COLUMNS packet and byte counters in two banks; the packet reads
 * cms_active_bank once and counts only in that bank. Its estimate (the minimum over its
 * rows) then claims the candidate slot picked by another hash of the flow when the slot
 * is empty, holds the same flow, or holds a smaller packet estimate. Row and slot indices
 * differ from the XDP program's (CRC-32 and multiply-shift instead of MurmurHash3); the
 * controller never needs them. Bytes are the frame length as received.
 */
#include "include/pipeline.p4"

#ifndef CMS_ROWS
#define CMS_ROWS 4
#endif
#ifndef CMS_COLUMNS
#define CMS_COLUMNS 2048
#endif
#ifndef CMS_CANDIDATES
#define CMS_CANDIDATES 1024
#endif
#ifndef FLOW_KEY_MODE
#define FLOW_KEY_MODE 0
#endif

#if CMS_ROWS < 1 || CMS_ROWS > 8 || (CMS_COLUMNS & (CMS_COLUMNS - 1)) || \
    (CMS_CANDIDATES & (CMS_CANDIDATES - 1))
#error "CMS_ROWS must be 1..8; CMS_COLUMNS and CMS_CANDIDATES powers of two"
#endif

#define CMS_CELLS (2 * CMS_ROWS * CMS_COLUMNS)
#define CMS_CANDIDATE_CELLS (2 * CMS_CANDIDATES)
#define CMS_CANDIDATE_MULTIPLIER 0x7feb352d

control Cms(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    @name(".cms_active_bank") register<bit<32>>(1) active_bank;
    @name(".cms_packets") register<bit<64>>(CMS_CELLS) packets;      /* [bank][row][column] */
    @name(".cms_bytes") register<bit<64>>(CMS_CELLS) bytes;
    ADDR_REGISTERS(cand_src_addr, CMS_CANDIDATE_CELLS);  /* [bank][slot] */
    ADDR_REGISTERS(cand_dst_addr, CMS_CANDIDATE_CELLS);
    @name(".cand_src_port") register<bit<16>>(CMS_CANDIDATE_CELLS) cand_src_port;
    @name(".cand_dst_port") register<bit<16>>(CMS_CANDIDATE_CELLS) cand_dst_port;
    @name(".cand_proto") register<bit<8>>(CMS_CANDIDATE_CELLS) cand_proto;
    @name(".cand_packets") register<bit<64>>(CMS_CANDIDATE_CELLS) cand_packets;
    @name(".cand_bytes") register<bit<64>>(CMS_CANDIDATE_CELLS) cand_bytes;

    flow_key_t key;
    bit<32> fp;
    bit<32> bank;
    bit<64> est_packets = 0xffffffffffffffff;
    bit<64> est_bytes = 0xffffffffffffffff;

    /* Adds the packet to its counter in `row` and lowers the estimates to that counter. */
    @hidden action count_row(bit<32> row, bit<64> multiplier) {
        bit<32> idx = (bank * CMS_ROWS + row) * CMS_COLUMNS + FLOW_INDEX(fp, multiplier, CMS_COLUMNS);
        bit<64> p;
        bit<64> b;
        packets.read(p, idx);
        bytes.read(b, idx);
        p = p + 1;
        b = b + (bit<64>)std.packet_length;
        packets.write(idx, p);
        bytes.write(idx, b);
        est_packets = p < est_packets ? p : est_packets;
        est_bytes = b < est_bytes ? b : est_bytes;
    }

    @hidden action offer_candidate() {
        bit<32> slot = bank * CMS_CANDIDATES + FLOW_INDEX(fp, CMS_CANDIDATE_MULTIPLIER, CMS_CANDIDATES);
        flow_key_t held;
        bit<64> held_packets;
        bit<64> held_bytes;
        ADDR_READ(cand_src_addr, held.src_addr, slot);
        ADDR_READ(cand_dst_addr, held.dst_addr, slot);
        cand_src_port.read(held.src_port, slot);
        cand_dst_port.read(held.dst_port, slot);
        cand_proto.read(held.proto, slot);
        cand_packets.read(held_packets, slot);
        cand_bytes.read(held_bytes, slot);
        bool same = held.src_addr == key.src_addr && held.dst_addr == key.dst_addr &&
                    held.src_port == key.src_port && held.dst_port == key.dst_port &&
                    held.proto == key.proto;
        bool claim = !same && held_packets < est_packets;   /* an empty slot holds 0 */
        if (claim) {
            held = key;
        }
        if (claim || (same && est_packets > held_packets)) {
            held_packets = est_packets;
        }
        if (claim || (same && est_bytes > held_bytes)) {
            held_bytes = est_bytes;
        }
        ADDR_WRITE(cand_src_addr, slot, held.src_addr);
        ADDR_WRITE(cand_dst_addr, slot, held.dst_addr);
        cand_src_port.write(slot, held.src_port);
        cand_dst_port.write(slot, held.dst_port);
        cand_proto.write(slot, held.proto);
        cand_packets.write(slot, held_packets);
        cand_bytes.write(slot, held_bytes);
    }

    apply {
        if (meta.has_flow == 0) {
            return;
        }
        /* the one read of the bank: every counter this packet touches is in it */
        active_bank.read(bank, 0);
        bank = bank & 1;
        key = meta.flow;
        if (FLOW_KEY_MODE == 1) {   /* address pair: no ports */
            key.src_port = 0;
            key.dst_port = 0;
        }
        flow_fingerprint(key, fp);
        /* odd multipliers, one per row */
        count_row(0, 0x9e3779b1);
        if (CMS_ROWS > 1) { count_row(1, 0x85ebca6b); }
        if (CMS_ROWS > 2) { count_row(2, 0xc2b2ae35); }
        if (CMS_ROWS > 3) { count_row(3, 0x27d4eb2f); }
        if (CMS_ROWS > 4) { count_row(4, 0x165667b1); }
        if (CMS_ROWS > 5) { count_row(5, 0xd3a2646d); }
        if (CMS_ROWS > 6) { count_row(6, 0xfd7046c5); }
        if (CMS_ROWS > 7) { count_row(7, 0xb55a4f09); }
        offer_candidate();
    }
}

#ifndef INNET_COMPOSED
/* Standalone, the sketch only measures: what it saw goes to the CPU port or is dropped.
 * The composed pipeline (innet.p4) forwards it with the router. */
control InnetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    FlowKey() flow_key;
    Cms() cms;
    apply {
        flow_key.apply(hdr, meta, std);
        cms.apply(hdr, meta, std);
        to_cpu_or_drop(std);
    }
}

INNET_SWITCH;
#endif
