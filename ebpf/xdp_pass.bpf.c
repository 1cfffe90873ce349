// SPDX-License-Identifier: GPL-2.0
/* xdp_pass: counts received frames and hands them on (next NF of the chain, or the kernel).
 *
 * Attached to every veth that faces a native-XDP router: a veth only accepts
 * XDP_REDIRECT'ed frames when its peer runs an XDP program. The count tells a
 * test or benchmark how many frames reached this interface.
 */
#include "include/chain.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} rx_packets SEC(".maps");

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *count = bpf_map_lookup_elem(&rx_packets, &key);

	if (count)
		*count += 1;
	return chain_pass(ctx);
}

char LICENSE[] SEC("license") = "GPL";
