// SPDX-License-Identifier: GPL-2.0
/* cms: a Count-Min sketch of packets and bytes per flow, with heavy-hitter candidates.
 *
 * CMS_ROWS rows of CMS_COLUMNS counters each; row r picks its column with the flow
 * key's MurmurHash3 seeded with CMS_ROW_SEED(r), so the rows collide independently.
 * A flow's estimate is the minimum over its rows: never below the true count, and
 * above it by at most e/CMS_COLUMNS of the epoch's total with probability 1 - e^-rows.
 * With CMS_CONSERVATIVE (conservative update, Estan and Varghese) a packet raises only
 * the cells below its new estimate (minimum + 1, minimum + length) to it: the estimate
 * still never under-counts, and over-counts far less; a row then no longer sums to the
 * epoch's packets, so the totals are counted apart (cms_totals, per CPU).
 *
 * Candidates: CMS_CANDIDATES slots in sets of CMS_CANDIDATE_WAYS, the set picked by
 * another hash of the key, each counting the packets and bytes of the flow it holds. A flow
 * not held may take over the slot with its set's smallest count (see offer_candidate).
 *
 * Two banks of sketch, candidates and totals: the packet reads cms_control.active_bank
 * once and counts only there, so when the controller flips the bank (and waits out the
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
#ifndef CMS_CONSERVATIVE
#define CMS_CONSERVATIVE 0
#endif
#ifndef FLOW_KEY_MODE
#define FLOW_KEY_MODE FLOW_KEY_5TUPLE
#endif
#define CMS_CANDIDATE_WAYS 16

#if CMS_ROWS < 1 || (CMS_COLUMNS & (CMS_COLUMNS - 1)) || (CMS_CANDIDATES & (CMS_CANDIDATES - 1)) || \
	CMS_CANDIDATES < CMS_CANDIDATE_WAYS
#error "CMS_ROWS must be at least 1; CMS_COLUMNS and CMS_CANDIDATES powers of two, CMS_CANDIDATES at least 16"
#endif

#define CMS_CANDIDATE_SETS (CMS_CANDIDATES / CMS_CANDIDATE_WAYS)
#define CANDIDATE_PACKETS_MAX 0xffffffffULL

/* Distinct odd seeds (multiples of the golden ratio) give each row its own hash;
 * the candidate set uses yet another one. */
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
	__u32 packets;             /* saturates at 2^32 - 1 */
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

/* [bank][set][way] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cms_candidate);
	__uint(max_entries, 2 * CMS_CANDIDATES);
} cms_candidates SEC(".maps");

/* [bank]: every packet counted, per CPU (summed when read) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct cms_cell);
	__uint(max_entries, 2);
} cms_totals SEC(".maps");

/* True with probability 1/(n+1): a uniform 32-bit r is below 2^32/(n+1). */
static __always_inline int coin_flip(__u64 n)
{
	if (n >= CANDIDATE_PACKETS_MAX)
		return 0;
	return (((__u64)bpf_get_prandom_u32() * (n + 1)) >> 32) == 0;
}

/* Count the packet in the flow's candidate slot, if its set holds it. Else the flow may take
 * over the slot with the set's smallest count `min`: only if its sketch estimate is larger
 * (it may be the heavier flow), and then with probability 1/(min+1), as PRECISION admits
 * flows, inheriting min+1 packets and the slot's bytes plus this packet's. The sketch's
 * estimates of a wide sketch keep mice out; the coin keeps a narrow sketch's inflated
 * estimates from churning the table. */
static __always_inline void offer_candidate(__u32 bank, struct flow_key *key, __u64 est_packets, __u64 len)
{
	__u32 base = bank * CMS_CANDIDATES +
		     (flow_key_hash(key, CMS_CANDIDATE_SEED) & (CMS_CANDIDATE_SETS - 1)) * CMS_CANDIDATE_WAYS;
	struct cms_candidate *cand, *min_cand = NULL;
	__u32 min_packets = CANDIDATE_PACKETS_MAX;

#pragma unroll
	for (int w = 0; w < CMS_CANDIDATE_WAYS; w++) {
		__u32 slot = base + w;
		__u32 held;

		cand = bpf_map_lookup_elem(&cms_candidates, &slot);
		if (!cand)
			return;
		/* only a slot that seems to hold the flow is locked: the others are merely
		 * candidates for the minimum, read without the lock */
		if (flow_key_equal(cand, key)) {
			bpf_spin_lock(&cand->lock);
			if (flow_key_equal(cand, key)) {
				if (cand->packets < CANDIDATE_PACKETS_MAX)
					cand->packets++;
				cand->bytes += len;
			}
			bpf_spin_unlock(&cand->lock);
			return;
		}
		held = *(volatile __u32 *)&cand->packets;
		if (held < min_packets) {
			min_packets = held;
			min_cand = cand;
		}
	}
	if (!min_cand || est_packets <= min_packets || !coin_flip(min_packets))
		return;
	bpf_spin_lock(&min_cand->lock);
	if (min_cand->packets == min_packets) { /* no other CPU changed it meanwhile */
		__builtin_memcpy(min_cand, key, sizeof(*key));
		min_cand->packets = min_packets + 1;
		min_cand->bytes += len;
	}
	bpf_spin_unlock(&min_cand->lock);
}

static __always_inline __u32 cell_index(__u32 bank, int row, struct flow_key *key)
{
	return (bank * CMS_ROWS + row) * CMS_COLUMNS + (flow_key_hash(key, CMS_ROW_SEED(row)) & (CMS_COLUMNS - 1));
}

SEC("xdp")
int cms(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u64 len = bpf_xdp_get_buff_len(ctx);
	__u64 est_packets = ~0ULL;
	struct cms_control *control;
	struct cms_cell *total;
	struct flow_key key;
	__u32 zero = 0, bank;

	control = bpf_map_lookup_elem(&cms_control, &zero);
	if (!control)
		return chain_pass(ctx);
	/* the one read of the bank: every counter this packet touches is in it */
	bank = *(volatile __u32 *)&control->active_bank & 1;
	if (parse_flow_key(data, data_end, &key, FLOW_KEY_MODE))
		return chain_pass(ctx);
	total = bpf_map_lookup_elem(&cms_totals, &bank);
	if (!total)
		return chain_pass(ctx);
	total->packets++;
	total->bytes += len;

#if CMS_CONSERVATIVE
	__u64 est_bytes = ~0ULL;

	/* first the estimate before this packet: the minimum over the rows */
#pragma unroll
	for (int r = 0; r < CMS_ROWS; r++) {
		__u32 idx = cell_index(bank, r, &key);
		struct cms_cell *cell = bpf_map_lookup_elem(&cms_sketch, &idx);
		__u64 packets, bytes;

		if (!cell)
			return chain_pass(ctx);
		packets = *(volatile __u64 *)&cell->packets;
		bytes = *(volatile __u64 *)&cell->bytes;
		if (packets < est_packets)
			est_packets = packets;
		if (bytes < est_bytes)
			est_bytes = bytes;
	}
	est_packets += 1;
	est_bytes += len;
	/* then raise each cell below the new estimate to it, by an atomic add of the shortfall:
	 * a cell another CPU raised meanwhile for another flow ends higher than both want, never
	 * lower. (Two packets of one flow on two CPUs at once may count as one; RSS keeps a
	 * flow's packets on one CPU.) */
#pragma unroll
	for (int r = 0; r < CMS_ROWS; r++) {
		__u32 idx = cell_index(bank, r, &key);
		struct cms_cell *cell = bpf_map_lookup_elem(&cms_sketch, &idx);
		__u64 packets, bytes;

		if (!cell)
			return chain_pass(ctx);
		packets = *(volatile __u64 *)&cell->packets;
		bytes = *(volatile __u64 *)&cell->bytes;
		if (packets < est_packets)
			__sync_fetch_and_add(&cell->packets, est_packets - packets);
		if (bytes < est_bytes)
			__sync_fetch_and_add(&cell->bytes, est_bytes - bytes);
	}
#else
#pragma unroll
	for (int r = 0; r < CMS_ROWS; r++) {
		__u32 idx = cell_index(bank, r, &key);
		struct cms_cell *cell = bpf_map_lookup_elem(&cms_sketch, &idx);
		__u64 packets;

		if (!cell)
			return chain_pass(ctx);
		packets = __sync_fetch_and_add(&cell->packets, 1) + 1;
		__sync_fetch_and_add(&cell->bytes, len);
		if (packets < est_packets)
			est_packets = packets;
	}
#endif
	offer_candidate(bank, &key, est_packets, len);
	return chain_pass(ctx);
}

char LICENSE[] SEC("license") = "GPL";
