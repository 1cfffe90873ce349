// SPDX-License-Identifier: GPL-2.0
/* Priority classifier: a tc (clsact egress, cls_bpf direct-action) program that
 * puts each IP packet in one of PRIO_LEVELS priority levels (0 is served first).
 *
 * A flow_levels entry for the packet's 5-tuple wins, else the dscp_levels entry
 * for its DSCP, else the lowest level (PRIO_LEVELS - 1). The level picks the HTB
 * class the controller wrote into level_classes, through skb->priority: HTB takes
 * a priority whose major number is its own handle as the class id. A level with
 * no class (queues not configured yet) leaves skb->priority alone, so HTB's
 * default class (or whatever qdisc runs) decides. Non-IP frames are not
 * classified. Every packet goes on (TC_ACT_OK).
 */
#include <linux/pkt_cls.h>

#include "include/flowkey.h"

#ifndef PRIO_LEVELS
#define PRIO_LEVELS 3
#endif
#ifndef PRIO_MAX_FLOWS
#define PRIO_MAX_FLOWS 1024
#endif
#define DSCP_VALUES 64
/* Enough linear bytes for Ethernet, IPv6 with a few extension headers and the ports. */
#define PRIO_PULL_LEN 128

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

/* The HTB class id (major:minor, as skb->priority wants it) of each level; 0: none. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, PRIO_LEVELS);
} level_classes SEC(".maps");

static __always_inline void count(void *map, __u32 *slot, __u32 len)
{
	struct counters *c = bpf_map_lookup_elem(map, slot);

	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

/* The level of the first table that has an entry for the packet, counted there. */
static __always_inline __u32 classify(struct flow_key *key, __u8 dscp, __u32 len)
{
	struct dscp_key dkey = { .dscp = dscp };
	struct level_entry *rule = bpf_map_lookup_elem(&flow_levels, key);

	if (!rule)
		rule = bpf_map_lookup_elem(&dscp_levels, &dkey);
	if (!rule || rule->level >= PRIO_LEVELS)
		return PRIO_LEVELS - 1;
	count(&rule_stats, &rule->stats_slot, len);
	return rule->level;
}

SEC("tc")
int prio_classify(struct __sk_buff *skb)
{
	__u32 want = skb->len < PRIO_PULL_LEN ? skb->len : PRIO_PULL_LEN;
	struct flow_key key;
	__u32 level, *classid;
	__u8 dscp;

	/* headers past the linear part are invisible to direct packet access */
	if (skb->data_end - skb->data < want)
		bpf_skb_pull_data(skb, want);
	if (parse_flow_key_dscp((void *)(long)skb->data, (void *)(long)skb->data_end, &key,
				FLOW_KEY_5TUPLE, &dscp))
		return TC_ACT_OK;

	level = classify(&key, dscp, skb->len);
	count(&level_stats, &level, skb->len);
	classid = bpf_map_lookup_elem(&level_classes, &level);
	if (classid && *classid)
		skb->priority = *classid;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
