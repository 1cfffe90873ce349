// SPDX-License-Identifier: GPL-2.0
/* precision: PRECISION heavy-hitter detection (Ben Basat et al., IEEE/ACM ToN 2020),
 * in a compact layout: fingerprints and 32-bit counters in the stages, full keys once
 * per tracked flow in a separate key table.
 *
 * Stages: PRECISION_STAGES arrays of PRECISION_SLOTS (fingerprint, packets) slots of 8
 * bytes; stage s picks the flow's slot with the key's MurmurHash3 seeded with
 * PRECISION_STAGE_SEED(s), the fingerprint is yet another seed's hash (never 0: 0 marks
 * a free slot). A packet whose fingerprint one of its slots holds increments that
 * counter. A packet of an untracked flow notes the smallest counter `min` among its
 * slots and, with probability 1/(min+1) (bpf_get_prandom_u32, exact), takes that slot
 * over with counter min+1 once its pass over the stages is done: the write the paper's
 * recirculated packet makes, effective for the flow's later packets.
 *
 * Key table: PRECISION_KEY_SETS sets of PRECISION_KEY_WAYS (flow key, packets) entries; a
 * flow may sit in either of two sets picked by its fingerprint. After its stage counter
 * moved (counted or taken over) a flow writes the counter into its entry, or, not holding
 * one, replaces the entry of its two sets with the smallest counter when its own is larger. So the heaviest
 * tracked flows keep their keys, and the key table is what the controller reads: a key
 * costs 48 bytes once per flow worth naming, where a stage slot costs 8.
 *
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
#ifndef PRECISION_KEY_SETS
#define PRECISION_KEY_SETS 64
#endif
#ifndef FLOW_KEY_MODE
#define FLOW_KEY_MODE FLOW_KEY_5TUPLE
#endif
#define PRECISION_KEY_WAYS 8

#if PRECISION_STAGES < 1 || (PRECISION_SLOTS & (PRECISION_SLOTS - 1)) || PRECISION_KEY_SETS < 1
#error "PRECISION_STAGES and PRECISION_KEY_SETS must be at least 1 and PRECISION_SLOTS a power of two"
#endif

#define PRECISION_STAGE_SEED(s) (0x9e3779b9u * (2 * (s) + 1))
#define PRECISION_FINGERPRINT_SEED 0x27d4eb2fu
#define COUNTER_MAX 0xffffffffu

struct precision_slot {
	__u32 fingerprint; /* 0: free */
	__u32 packets;
};

/* The flow key's fields first, laid out exactly as struct flow_key. */
struct precision_key {
	FLOW_KEY_FIELDS
	struct bpf_spin_lock lock; /* CPUs see an entry's key and counter change together */
	__u32 packets;             /* the flow's stage counter after its latest packet */
};

_Static_assert(__builtin_offsetof(struct precision_key, lock) == sizeof(struct flow_key),
	       "a key entry starts with a struct flow_key");

/* [stage][slot] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct precision_slot);
	__uint(max_entries, PRECISION_STAGES * PRECISION_SLOTS);
} precision_stages SEC(".maps");

/* [set][way] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct precision_key);
	__uint(max_entries, PRECISION_KEY_SETS * PRECISION_KEY_WAYS);
} precision_keys SEC(".maps");

/* True with probability 1/(n+1): a uniform 32-bit r is below 2^32/(n+1). */
static __always_inline int coin_flip(__u64 n)
{
	if (n >= COUNTER_MAX)
		return 0;
	return (((__u64)bpf_get_prandom_u32() * (n + 1)) >> 32) == 0;
}

/* The flow's two candidate key sets (two choices balance the sets' loads): multiply-shifts
 * of the fingerprint and of a bijective remix of it. */
#define KEY_SET(fp) ((__u32)(((__u64)(fp) * PRECISION_KEY_SETS) >> 32))
#define KEY_REMIX 0x9e3779b1u

/* Note the flow's new counter in its key entry, or claim the entry with the smallest counter
 * in its two sets when that is below the flow's. */
static __always_inline void offer_key(const struct flow_key *key, __u32 fingerprint, __u32 packets)
{
	__u32 bases[2] = { KEY_SET(fingerprint) * PRECISION_KEY_WAYS,
			   KEY_SET(fingerprint * KEY_REMIX) * PRECISION_KEY_WAYS };
	struct precision_key *entry, *min_entry = NULL;
	__u32 min_packets = COUNTER_MAX;

#pragma unroll
	for (int i = 0; i < 2 * PRECISION_KEY_WAYS; i++) {
		__u32 idx = bases[i / PRECISION_KEY_WAYS] + i % PRECISION_KEY_WAYS;
		__u32 held;

		entry = bpf_map_lookup_elem(&precision_keys, &idx);
		if (!entry)
			return;
		/* only an entry that seems to hold the flow is locked: the others are merely
		 * candidates for the minimum, read without the lock */
		if (flow_key_equal(entry, key)) {
			bpf_spin_lock(&entry->lock);
			if (flow_key_equal(entry, key))
				entry->packets = packets;
			bpf_spin_unlock(&entry->lock);
			return;
		}
		held = *(volatile __u32 *)&entry->packets;
		if (held < min_packets) {
			min_packets = held;
			min_entry = entry;
		}
	}
	if (!min_entry || min_packets >= packets)
		return;
	bpf_spin_lock(&min_entry->lock);
	if (min_entry->packets < packets) { /* another CPU may have claimed it meanwhile */
		__builtin_memcpy(min_entry, key, sizeof(*key));
		min_entry->packets = packets;
	}
	bpf_spin_unlock(&min_entry->lock);
}

SEC("xdp")
int precision(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct precision_slot *slot, *min_slot = NULL;
	__u32 min_packets = COUNTER_MAX, fingerprint;
	struct flow_key key;

	if (parse_flow_key(data, data_end, &key, FLOW_KEY_MODE))
		return chain_pass(ctx);
	fingerprint = flow_key_hash(&key, PRECISION_FINGERPRINT_SEED) ?: 1;

#pragma unroll
	for (int s = 0; s < PRECISION_STAGES; s++) {
		__u32 idx = s * PRECISION_SLOTS + (flow_key_hash(&key, PRECISION_STAGE_SEED(s)) & (PRECISION_SLOTS - 1));
		__u32 packets;

		slot = bpf_map_lookup_elem(&precision_stages, &idx);
		if (!slot)
			return chain_pass(ctx);
		packets = *(volatile __u32 *)&slot->packets;
		if (*(volatile __u32 *)&slot->fingerprint == fingerprint) {
			/* Unlocked: a takeover of this slot by another CPU between the check and the
			 * add would give that flow this one packet; a 32-bit counter saturates. */
			if (packets < COUNTER_MAX) {
				__sync_fetch_and_add(&slot->packets, 1);
				packets++;
			}
			offer_key(&key, fingerprint, packets);
			return chain_pass(ctx);
		}
		if (packets < min_packets) {
			min_packets = packets;
			min_slot = slot;
		}
	}

	/* the recirculated packet's write: take the minimum slot over as min+1 */
	if (min_slot && coin_flip(min_packets)) {
		min_slot->packets = min_packets + 1;
		min_slot->fingerprint = fingerprint;
		offer_key(&key, fingerprint, min_packets + 1);
	}
	return chain_pass(ctx);
}

char LICENSE[] SEC("license") = "GPL";
