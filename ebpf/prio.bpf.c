// SPDX-License-Identifier: GPL-2.0
/* Priority classifier: a tc (clsact egress, cls_bpf direct-action) program that
 * puts each IP packet in one of PRIO_LEVELS priority levels (0 is served first),
 * as include/prio.h classifies it.
 *
 * The level picks the HTB class the controller wrote into level_classes, through
 * skb->priority: HTB takes a priority whose major number is its own handle as the
 * class id. A level with no class (queues not configured yet) leaves skb->priority
 * alone, so HTB's default class (or whatever qdisc runs) decides. Non-IP frames are
 * not classified. Every packet goes on (TC_ACT_OK).
 */
#include <linux/pkt_cls.h>

#include "include/prio.h"

/* Enough linear bytes for Ethernet, IPv6 with a few extension headers and the ports. */
#define PRIO_PULL_LEN 128

/* The HTB class id (major:minor, as skb->priority wants it) of each level; 0: none. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, PRIO_LEVELS);
} level_classes SEC(".maps");

SEC("tc")
int prio_classify(struct __sk_buff *skb)
{
	__u32 want = skb->len < PRIO_PULL_LEN ? skb->len : PRIO_PULL_LEN;
	__u32 level, *classid;

	/* headers past the linear part are invisible to direct packet access */
	if (skb->data_end - skb->data < want)
		bpf_skb_pull_data(skb, want);
	if (prio_classify_frame((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &level))
		return TC_ACT_OK;

	classid = bpf_map_lookup_elem(&level_classes, &level);
	if (classid && *classid)
		skb->priority = *classid;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
