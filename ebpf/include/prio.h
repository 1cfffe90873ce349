/* prio's classification, shared by its tc classifier (ebpf/prio.bpf.c) and its XDP chain hop
 * behind a service function forwarder (ebpf/prio_chain.bpf.c): the same tables, counters and
 * statistics (map names and layouts are the catalog's, nfs/prio.yaml), so the controller
 * writes and reads either program alike.
 *
 * A flow_levels entry for the packet's 5-tuple wins, else the dscp_levels entry for its
 * DSCP, else the lowest level (PRIO_LEVELS - 1). In an NSH frame the packet is the inner
 * one (include/flowkey.h): its DSCP and 5-tuple decide, not the chain's encapsulation.
 */
#ifndef INNET_PRIO_H
#define INNET_PRIO_H

#include "flowkey.h"

#ifndef PRIO_LEVELS
#define PRIO_LEVELS 3
#endif
#ifndef PRIO_MAX_FLOWS
#define PRIO_MAX_FLOWS 1024
#endif
#define DSCP_VALUES 64

/* Logical table dscp_levels: match dscp (exact). */
struct dscp_key {
	__u8 dscp;
};

/* Both tables' action set_level(level). */
struct level_entry {
	__u8 level;
	__u8 pad[3];
	__u32 stats_slot; /* index into rule_stats, allocated by the controller */
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct dscp_key);
	__type(value, struct level_entry);
	__uint(max_entries, DSCP_VALUES);
} dscp_levels SEC(".maps");

/* Logical table flow_levels: match src_addr, dst_addr, src_port, dst_port, proto (exact). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct level_entry);
	__uint(max_entries, PRIO_MAX_FLOWS);
} flow_levels SEC(".maps");

/* Per-entry counters of both tables, one slot per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(max_entries, DSCP_VALUES + PRIO_MAX_FLOWS);
} rule_stats SEC(".maps");

/* Statistic `levels`: packets and bytes classified into each level. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(max_entries, PRIO_LEVELS);
} level_stats SEC(".maps");

static __always_inline void prio_count(void *map, __u32 *slot, __u32 len)
{
	struct counters *c = bpf_map_lookup_elem(map, slot);

	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

/* The level of the first table that has an entry for the packet, counted there. */
static __always_inline __u32 prio_lookup(struct flow_key *key, __u8 dscp, __u32 len)
{
	struct dscp_key dkey = { .dscp = dscp };
	struct level_entry *rule = bpf_map_lookup_elem(&flow_levels, key);

	if (!rule)
		rule = bpf_map_lookup_elem(&dscp_levels, &dkey);
	if (!rule || rule->level >= PRIO_LEVELS)
		return PRIO_LEVELS - 1;
	prio_count(&rule_stats, &rule->stats_slot, len);
	return rule->level;
}

/* Classifies the Ethernet frame at data (plain IPv4/IPv6, or NSH around one) into *level and
 * counts it there, `len` bytes; -1 for a frame that is not IP or whose headers are truncated,
 * which is neither classified nor counted. */
static __always_inline int prio_classify_frame(void *data, void *data_end, __u32 len, __u32 *level)
{
	struct flow_key key;
	__u8 dscp;

	if (parse_flow_key_dscp(data, data_end, &key, FLOW_KEY_5TUPLE, &dscp))
		return -1;
	*level = prio_lookup(&key, dscp, len);
	prio_count(&level_stats, level, len);
	return 0;
}

#endif /* INNET_PRIO_H */
