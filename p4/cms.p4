/* Count-Min sketch with heavy-hitter candidates on BMv2; the contract is nfs/cms.yaml,
 * the packet behaviour that of ebpf/cms.bpf.c.
 *
 * CMS_ROWS rows of CMS_COLUMNS packet and byte counters in two banks; the packet reads
 * cms_active_bank once and counts only in that bank. It reads its cells first: the new
 * estimate is their minimum plus this packet. Then each cell gains the packet, or, with
 * CMS_CONSERVATIVE (conservative update), only a cell below the new estimate is raised to
 * it. Then the candidate set picked by another hash of the flow (CMS_CANDIDATE_WAYS slots,
 * each counting the packets and bytes of its flow): the flow's own slot counts the packet;
 * a flow not held takes over the slot with the set's smallest count `min` if its estimate is
 * larger, with probability 1/(min+1) (v1model random() over 0..min), inheriting min+1
 * packets and the slot's bytes plus this packet's. Row and set indices differ from the XDP
 * program's (CRC-32 and multiply-shift instead of MurmurHash3); controller/stats.py knows
 * both. Bytes are the frame length as received; cms_total_* count every packet per bank.
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
#ifndef CMS_CONSERVATIVE
#define CMS_CONSERVATIVE 0
#endif
#ifndef FLOW_KEY_MODE
#define FLOW_KEY_MODE 0
#endif
#define CMS_CANDIDATE_WAYS 16

#if CMS_ROWS < 1 || CMS_ROWS > 8 || (CMS_COLUMNS & (CMS_COLUMNS - 1)) || \
    (CMS_CANDIDATES & (CMS_CANDIDATES - 1)) || CMS_CANDIDATES < CMS_CANDIDATE_WAYS
#error "CMS_ROWS must be 1..8; CMS_COLUMNS and CMS_CANDIDATES powers of two, CMS_CANDIDATES at least 16"
#endif

#define CMS_CELLS (2 * CMS_ROWS * CMS_COLUMNS)
#define CMS_CANDIDATE_CELLS (2 * CMS_CANDIDATES)
#define CMS_CANDIDATE_SETS (CMS_CANDIDATES / CMS_CANDIDATE_WAYS)
#define CMS_CANDIDATE_MULTIPLIER 0x7feb352d
#define CMS_CANDIDATE_MAX 0xffffffff

/* Row `row`'s cell: where it is and what it holds; the minimum so far. */
#define CMS_LOCATE(row, multiplier) \
    if (CMS_ROWS > (row)) { \
        locate(row, multiplier, idx##row, p##row, b##row); \
        min_packets = p##row < min_packets ? p##row : min_packets; \
        min_bytes = b##row < min_bytes ? b##row : min_bytes; \
    }
#define CMS_RAISE(row) \
    if (CMS_ROWS > (row)) { \
        raise(idx##row, p##row, b##row); \
    }

/* One slot of the flow's candidate set: count the packet if it holds the flow, else keep the minimum. */
#define CMS_CANDIDATE_VISIT(way) \
    if (!cand_done) { \
        read_candidate(cand_base + (way)); \
        if (held_is_flow) { \
            count_candidate(cand_index); \
            cand_done = true; \
        } else if (held_packets < cand_min) { \
            cand_min = held_packets; \
            cand_min_index = cand_index; \
        } \
    }

control Cms(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    @name(".cms_active_bank") register<bit<32>>(1) active_bank;
    @name(".cms_packets") register<bit<64>>(CMS_CELLS) packets;      /* [bank][row][column] */
    @name(".cms_bytes") register<bit<64>>(CMS_CELLS) bytes;
    @name(".cms_total_packets") register<bit<64>>(2) total_packets;  /* [bank] */
    @name(".cms_total_bytes") register<bit<64>>(2) total_bytes;
    ADDR_REGISTERS(cand_src_addr, CMS_CANDIDATE_CELLS);  /* [bank][set][way] */
    ADDR_REGISTERS(cand_dst_addr, CMS_CANDIDATE_CELLS);
    @name(".cand_src_port") register<bit<16>>(CMS_CANDIDATE_CELLS) cand_src_port;
    @name(".cand_dst_port") register<bit<16>>(CMS_CANDIDATE_CELLS) cand_dst_port;
    @name(".cand_proto") register<bit<8>>(CMS_CANDIDATE_CELLS) cand_proto;
    @name(".cand_packets") register<bit<32>>(CMS_CANDIDATE_CELLS) cand_packets;
    @name(".cand_bytes") register<bit<64>>(CMS_CANDIDATE_CELLS) cand_bytes;

    flow_key_t key;
    bit<32> fp;
    bit<32> bank;
    bit<64> len;
    bit<64> min_packets = 0xffffffffffffffff;
    bit<64> min_bytes = 0xffffffffffffffff;
    bit<64> est_packets;
    bit<64> est_bytes;
    bit<32> idx0; bit<32> idx1; bit<32> idx2; bit<32> idx3;
    bit<32> idx4; bit<32> idx5; bit<32> idx6; bit<32> idx7;
    bit<64> p0; bit<64> p1; bit<64> p2; bit<64> p3; bit<64> p4; bit<64> p5; bit<64> p6; bit<64> p7;
    bit<64> b0; bit<64> b1; bit<64> b2; bit<64> b3; bit<64> b4; bit<64> b5; bit<64> b6; bit<64> b7;
    bit<32> cand_base;
    bit<32> cand_index;
    bool held_is_flow;
    bit<32> held_packets;
    bool cand_done = false;
    bit<32> cand_min = CMS_CANDIDATE_MAX;
    bit<32> cand_min_index = 0;

    @hidden action locate(in bit<32> row, in bit<64> multiplier, out bit<32> idx, out bit<64> p, out bit<64> b) {
        idx = (bank * CMS_ROWS + row) * CMS_COLUMNS + FLOW_INDEX(fp, multiplier, CMS_COLUMNS);
        packets.read(p, idx);
        bytes.read(b, idx);
    }

    /* A cell the packet counts in: plain, + the packet; conservative, up to the new estimate. */
    @hidden action raise(in bit<32> idx, in bit<64> p, in bit<64> b) {
#if CMS_CONSERVATIVE
        packets.write(idx, p < est_packets ? est_packets : p);
        bytes.write(idx, b < est_bytes ? est_bytes : b);
#else
        packets.write(idx, p + 1);
        bytes.write(idx, b + len);
#endif
    }

    @hidden action read_candidate(bit<32> index) {
        flow_key_t held;
        cand_index = index;
        ADDR_READ(cand_src_addr, held.src_addr, index);
        ADDR_READ(cand_dst_addr, held.dst_addr, index);
        cand_src_port.read(held.src_port, index);
        cand_dst_port.read(held.dst_port, index);
        cand_proto.read(held.proto, index);
        cand_packets.read(held_packets, index);
        held_is_flow = held.src_addr == key.src_addr && held.dst_addr == key.dst_addr &&
                       held.src_port == key.src_port && held.dst_port == key.dst_port &&
                       held.proto == key.proto;
    }

    @hidden action count_candidate(bit<32> index) {
        bit<64> held_bytes;
        cand_bytes.read(held_bytes, index);
        cand_packets.write(index, held_packets == CMS_CANDIDATE_MAX ? held_packets : held_packets + 1);
        cand_bytes.write(index, held_bytes + len);
    }

    @hidden action claim_candidate(bit<32> index) {
        bit<64> held_bytes;
        cand_bytes.read(held_bytes, index);
        ADDR_WRITE(cand_src_addr, index, key.src_addr);
        ADDR_WRITE(cand_dst_addr, index, key.dst_addr);
        cand_src_port.write(index, key.src_port);
        cand_dst_port.write(index, key.dst_port);
        cand_proto.write(index, key.proto);
        cand_packets.write(index, cand_min + 1);
        cand_bytes.write(index, held_bytes + len);
    }

    @hidden action count_total() {
        bit<64> t;
        total_packets.read(t, bank);
        total_packets.write(bank, t + 1);
        total_bytes.read(t, bank);
        total_bytes.write(bank, t + len);
    }

    apply {
        if (meta.has_flow == 0) {
            return;
        }
        /* the one read of the bank: every counter this packet touches is in it */
        active_bank.read(bank, 0);
        bank = bank & 1;
        len = (bit<64>)std.packet_length;
        key = meta.flow;
        if (FLOW_KEY_MODE == 1) {   /* address pair: no ports */
            key.src_port = 0;
            key.dst_port = 0;
        }
        flow_fingerprint(key, fp);
        count_total();
        /* odd multipliers, one per row */
        CMS_LOCATE(0, 0x9e3779b1)
        CMS_LOCATE(1, 0x85ebca6b)
        CMS_LOCATE(2, 0xc2b2ae35)
        CMS_LOCATE(3, 0x27d4eb2f)
        CMS_LOCATE(4, 0x165667b1)
        CMS_LOCATE(5, 0xd3a2646d)
        CMS_LOCATE(6, 0xfd7046c5)
        CMS_LOCATE(7, 0xb55a4f09)
        est_packets = min_packets + 1;
        est_bytes = min_bytes + len;
        CMS_RAISE(0)
        CMS_RAISE(1)
        CMS_RAISE(2)
        CMS_RAISE(3)
        CMS_RAISE(4)
        CMS_RAISE(5)
        CMS_RAISE(6)
        CMS_RAISE(7)
        cand_base = bank * CMS_CANDIDATES +
                    FLOW_INDEX(fp, CMS_CANDIDATE_MULTIPLIER, CMS_CANDIDATE_SETS) * CMS_CANDIDATE_WAYS;
        CMS_CANDIDATE_VISIT(0)
        CMS_CANDIDATE_VISIT(1)
        CMS_CANDIDATE_VISIT(2)
        CMS_CANDIDATE_VISIT(3)
        CMS_CANDIDATE_VISIT(4)
        CMS_CANDIDATE_VISIT(5)
        CMS_CANDIDATE_VISIT(6)
        CMS_CANDIDATE_VISIT(7)
        CMS_CANDIDATE_VISIT(8)
        CMS_CANDIDATE_VISIT(9)
        CMS_CANDIDATE_VISIT(10)
        CMS_CANDIDATE_VISIT(11)
        CMS_CANDIDATE_VISIT(12)
        CMS_CANDIDATE_VISIT(13)
        CMS_CANDIDATE_VISIT(14)
        CMS_CANDIDATE_VISIT(15)
        if (!cand_done && est_packets > (bit<64>)cand_min && cand_min != CMS_CANDIDATE_MAX) {
            bit<32> coin;
            random(coin, 0, cand_min);
            if (coin == 0) {
                claim_candidate(cand_min_index);
            }
        }
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
