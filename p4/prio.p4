/* Priority classification on BMv2; the contract is nfs/prio.yaml, the behaviour that of
 * ebpf/prio.bpf.c.
 *
 * Each IP packet gets one of PRIO_LEVELS levels (0 is served first): a flow_levels entry
 * for its 5-tuple wins, else the dscp_levels entry for its DSCP, else the lowest level;
 * a level past the last is the lowest too. The level picks the packet's priority queue
 * (standard_metadata.priority). BMv2 (1.15, since p4lang/behavioral-model#1276) serves
 * its highest priority queue first, so level L is priority PRIO_LEVELS - 1 - L, and the
 * switch must run with --priority-queues of at least PRIO_LEVELS (8 fits every level
 * count): BMv2 drops a packet whose priority has no queue. Packets that are not IP, or
 * are truncated, keep priority 0 and are not counted.
 */
#include "include/pipeline.p4"

#ifndef PRIO_LEVELS
#define PRIO_LEVELS 3
#endif
#ifndef PRIO_MAX_FLOWS
#define PRIO_MAX_FLOWS 1024
#endif

#if PRIO_LEVELS < 1 || PRIO_LEVELS > 8
#error "PRIO_LEVELS must be 1..8: standard_metadata.priority has 3 bits"
#endif

control Prio(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    @name(".prio_packets") register<bit<64>>(PRIO_LEVELS) level_packets;
    @name(".prio_bytes") register<bit<64>>(PRIO_LEVELS) level_bytes;
    direct_counter(CounterType.packets_and_bytes) dscp_level_counters;
    direct_counter(CounterType.packets_and_bytes) flow_level_counters;

    bit<8> chosen = PRIO_LEVELS - 1;

    action set_level(bit<8> level) {
        chosen = level;
    }

    table flow_levels {
        key = {
            meta.flow.src_addr: exact @name("src_addr");
            meta.flow.dst_addr: exact @name("dst_addr");
            meta.flow.src_port: exact @name("src_port");
            meta.flow.dst_port: exact @name("dst_port");
            meta.flow.proto: exact @name("proto");
        }
        actions = { set_level; @defaultonly NoAction; }
        default_action = NoAction();
        counters = flow_level_counters;
        size = PRIO_MAX_FLOWS;
    }

    table dscp_levels {
        key = { meta.dscp: exact @name("dscp"); }
        actions = { set_level; @defaultonly NoAction; }
        default_action = NoAction();
        counters = dscp_level_counters;
        size = 64;
    }

    apply {
        if (meta.has_flow == 0) {
            return;
        }
        if (!flow_levels.apply().hit) {
            dscp_levels.apply();
        }
        if (chosen >= PRIO_LEVELS) {
            chosen = PRIO_LEVELS - 1;
        }
        std.priority = (bit<3>)(PRIO_LEVELS - 1 - chosen);

        bit<64> packets;
        bit<64> bytes;
        level_packets.read(packets, (bit<32>)chosen);
        level_bytes.read(bytes, (bit<32>)chosen);
        level_packets.write((bit<32>)chosen, packets + 1);
        level_bytes.write((bit<32>)chosen, bytes + (bit<64>)std.packet_length);
    }
}

#ifndef INNET_COMPOSED
/* Standalone, the classifier forwards nothing: packets go to the CPU port (in their
 * priority queue) or are dropped. The composed pipeline (innet.p4) routes them. */
control InnetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    FlowKey() flow_key;
    Prio() prio;
    apply {
        flow_key.apply(hdr, meta, std);
        prio.apply(hdr, meta, std);
        to_cpu_or_drop(std);
    }
}

INNET_SWITCH;
#endif
