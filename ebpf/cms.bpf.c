// SPDX-License-Identifier: GPL-2.0
/* cms: a Count-Min sketch of packets and bytes per flow, with heavy-hitter candidates.
 *
 * CMS_ROWS rows of CMS_COLUMNS counters each; row r picks its column with the flow
 * key's MurmurHash3 seeded with CMS_ROW_SEED(r), so the rows collide independently.
 * A flow's estimate is the minimum over its rows: never below the true count, and
 * above it by at most e/CMS_COLUMNS of the epoch's total with probability 1 - e^-rows.
 *
 * Two banks of sketch and candidates: the packet reads cms_control.active_bank once
 * and counts only there, so when the controller flips the bank (and waits out the
 * packets already in flight) the old bank is a closed epoch it can read and reset.
 * Every frame is passed on unchanged, to the next NF of the chain or the kernel
 * (include/chain.h); non-IP and truncated frames are not counted. See nfs/cms.yaml
 * for the contract.
 */
#include "include/chain.h"
#include "include/flowkey.h"

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
#define FLOW_KEY_MODE FLOW_KEY_5TUPLE
#endif

#if CMS_ROWS < 1 || (CMS_COLUMNS & (CMS_COLUMNS - 1)) || (CMS_CANDIDATES & (CMS_CANDIDATES - 1))
#error "CMS_ROWS must be at least 1; CMS_COLUMNS and CMS_CANDIDATES powers of two"
#endif

/* Distinct odd seeds (multiples of the golden ratio) give each row its own hash;
 * the candidate slot uses yet another one. */
#define CMS_ROW_SEED(r) (0x9e3779b9u * (2 * (r) + 1))
#define CMS_CANDIDATE_SEED 0x85ebca77u

struct cms_control {
	__u32 active_bank;
};

struct cms_cell {
	__u64 packets;
	__u64 bytes;
};

/* The flow key's fields first, laid out exactly as struct flow_key. */
struct cms_candidate {
	FLOW_KEY_FIELDS
	struct bpf_spin_lock lock; /* CPUs update a slot's key and estimates together */
	__u64 packets;
	__u64 bytes;
};

_Static_assert(__builtin_offsetof(struct cms_candidate, lock) == sizeof(struct flow_key),
	       "a candidate starts with a struct flow_key");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cms_control);
	__uint(max_entries, 1);
} cms_control SEC(".maps");

/* [bank][row][column] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cms_cell);
	__uint(max_entries, 2 * CMS_ROWS * CMS_COLUMNS);
} cms_sketch SEC(".maps");

/* [bank][slot] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cms_candidate);
	__uint(max_entries, 2 * CMS_CANDIDATES);
} cms_candidates SEC(".maps");

/* Keep the flow in its candidate slot if the slot is free, already holds it, or holds
 * a flow with a smaller packet estimate. */
static __always_inline void offer_candidate(__u32 bank, struct flow_key *key, __u64 packets, __u64 bytes)
{
	__u32 slot = bank * CMS_CANDIDATES + (flow_key_hash(key, CMS_CANDIDATE_SEED) & (CMS_CANDIDATES - 1));
	struct cms_candidate *cand = bpf_map_lookup_elem(&cms_candidates, &slot);

	if (!cand)
		return;
	/* An unlocked first look spares the lock (about a fifth of the program's cost) when the slot
	 * keeps a heavier flow; a torn read can at worst skip one offer, never tear a slot. */
	if (*(volatile __u64 *)&cand->packets >= packets && !flow_key_equal(cand, key))
		return;
	bpf_spin_lock(&cand->lock);
	if (flow_key_equal(cand, key)) {
		/* another CPU may have stored a later estimate of the same flow already */
		if (packets > cand->packets)
			cand->packets = packets;
		if (bytes > cand->bytes)
			cand->bytes = bytes;
	} else if (cand->packets < packets) { /* an empty slot has estimate 0 */
		__builtin_memcpy(cand, key, sizeof(*key));
		cand->packets = packets;
		cand->bytes = bytes;
	}
	bpf_spin_unlock(&cand->lock);
}

SEC("xdp")
int cms(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u64 len = bpf_xdp_get_buff_len(ctx);
	__u64 est_packets = ~0ULL, est_bytes = ~0ULL;
	struct cms_control *control;
	struct flow_key key;
	__u32 zero = 0, bank;

	control = bpf_map_lookup_elem(&cms_control, &zero);
	if (!control)
		return chain_pass(ctx);
	/* the one read of the bank: every counter this packet touches is in it */
	bank = *(volatile __u32 *)&control->active_bank & 1;
	if (parse_flow_key(data, data_end, &key, FLOW_KEY_MODE))
		return chain_pass(ctx);

#pragma unroll
	for (int r = 0; r < CMS_ROWS; r++) {
		__u32 idx = (bank * CMS_ROWS + r) * CMS_COLUMNS +
			    (flow_key_hash(&key, CMS_ROW_SEED(r)) & (CMS_COLUMNS - 1));
		struct cms_cell *cell = bpf_map_lookup_elem(&cms_sketch, &idx);
		__u64 packets, bytes;

		if (!cell)
			return chain_pass(ctx);
		packets = __sync_fetch_and_add(&cell->packets, 1) + 1;
		bytes = __sync_fetch_and_add(&cell->bytes, len) + len;
		if (packets < est_packets)
			est_packets = packets;
		if (bytes < est_bytes)
			est_bytes = bytes;
	}
	offer_candidate(bank, &key, est_packets, est_bytes);
	return chain_pass(ctx);
}

char LICENSE[] SEC("license") = "GPL";
