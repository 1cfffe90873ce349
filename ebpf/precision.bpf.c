// SPDX-License-Identifier: GPL-2.0
/* precision: PRECISION heavy-hitter detection (Ben Basat et al., IEEE/ACM ToN 2020).
 *
 * PRECISION_STAGES arrays of PRECISION_SLOTS (flow key, packet counter) slots; stage s
 * picks the flow's slot with the key's MurmurHash3 seeded with PRECISION_STAGE_SEED(s).
 * A packet of a flow tracked in one of its slots increments that counter. A packet of
 * an untracked flow notes the smallest counter `min` among its slots and, with
 * probability 1/(min+1) (bpf_get_prandom_u32, exact), takes that slot over with
 * counter min+1 once its pass over the stages is done: the write the paper's
 * recirculated packet makes, effective for the flow's later packets.
 * Every frame is passed on unchanged, to the next NF of the chain or the kernel
 * (include/chain.h); non-IP and truncated frames are not counted. See nfs/precision.yaml
 * for the contract.
 */
#include "include/chain.h"
#include "include/flowkey.h"

#ifndef PRECISION_STAGES
#define PRECISION_STAGES 2
#endif
#ifndef PRECISION_SLOTS
#define PRECISION_SLOTS 1024
#endif
#ifndef FLOW_KEY_MODE
#define FLOW_KEY_MODE FLOW_KEY_5TUPLE
#endif

#if PRECISION_STAGES < 1 || (PRECISION_SLOTS & (PRECISION_SLOTS - 1))
#error "PRECISION_STAGES must be at least 1 and PRECISION_SLOTS a power of two"
#endif

#define PRECISION_STAGE_SEED(s) (0x9e3779b9u * (2 * (s) + 1))

/* The flow key's fields first, laid out exactly as struct flow_key. */
struct precision_flow {
	FLOW_KEY_FIELDS
	struct bpf_spin_lock lock; /* CPUs see a slot's key and counter change together */
	__u64 packets;
};

_Static_assert(__builtin_offsetof(struct precision_flow, lock) == sizeof(struct flow_key),
	       "a slot starts with a struct flow_key");

/* [stage][slot] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct precision_flow);
	__uint(max_entries, PRECISION_STAGES * PRECISION_SLOTS);
} precision_flows SEC(".maps");

/* True with probability 1/(n+1): a uniform 32-bit r is below 2^32/(n+1). */
static __always_inline int coin_flip(__u64 n)
{
	if (n >= 0xffffffffULL)
		return 0;
	return (((__u64)bpf_get_prandom_u32() * (n + 1)) >> 32) == 0;
}

SEC("xdp")
int precision(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct precision_flow *slot, *min_slot = NULL;
	__u64 min_packets = ~0ULL;
	struct flow_key key;

	if (parse_flow_key(data, data_end, &key, FLOW_KEY_MODE))
		return chain_pass(ctx);

#pragma unroll
	for (int s = 0; s < PRECISION_STAGES; s++) {
		__u32 idx = s * PRECISION_SLOTS + (flow_key_hash(&key, PRECISION_STAGE_SEED(s)) & (PRECISION_SLOTS - 1));
		int tracked = 0;
		__u64 packets;

		slot = bpf_map_lookup_elem(&precision_flows, &idx);
		if (!slot)
			return chain_pass(ctx);
		/* Only a slot that seems to hold the flow is locked (to count it): the others are
		 * merely candidates for the minimum, read without the lock. */
		if (flow_key_equal(slot, &key)) {
			bpf_spin_lock(&slot->lock);
			tracked = flow_key_equal(slot, &key);
			if (tracked)
				slot->packets++;
			bpf_spin_unlock(&slot->lock);
			if (tracked)
				return chain_pass(ctx);
		}
		packets = *(volatile __u64 *)&slot->packets;
		if (packets < min_packets) {
			min_packets = packets;
			min_slot = slot;
		}
	}

	/* the recirculated packet's write: take the minimum slot over as min+1 */
	if (min_slot && coin_flip(min_packets)) {
		bpf_spin_lock(&min_slot->lock);
		__builtin_memcpy(min_slot, &key, sizeof(key));
		min_slot->packets = min_packets + 1;
		bpf_spin_unlock(&min_slot->lock);
	}
	return chain_pass(ctx);
}

char LICENSE[] SEC("license") = "GPL";
