// SPDX-License-Identifier: GPL-2.0
/* sff: the classifier and service function forwarder of innet's service chains, in XDP.
 *
 * Service chains travel in IETF NSH (RFC 8300, MD type 2, EtherType 0x894F). A plain IP
 * packet that matches `sfc_classify` is encapsulated here (SPI = its service path, SI =
 * the rule's index, TTL 63). An NSH frame, arriving or just encapsulated, is dispatched on
 * its (SPI, SI) by `sfc_hops`: to a local NF instance (SI decremented, tail call into the
 * instance's program in `sfc_nfs`, whose chain_next calls this program again, so the
 * packet is dispatched anew on the lower index), to the next node (MAC rewrite, NSH TTL
 * decremented, redirect), or out of the chain (NSH removed, the packet handed on through
 * chain_next to the router, which routes the original packet).
 *
 * It runs at the head of the hook's chain (catalog `chain: pass`): what it does not
 * handle, plain traffic no rule matches and non-IP frames, goes on unchanged to the next
 * NF, nfrouter, so it takes the plain routed path. NSH frames are never handed to the
 * kernel, which has no NSH forwarding: what cannot be dispatched is dropped, and every
 * outcome is counted in `verdicts`. See nfs/sff.yaml for the contract.
 */
#include "include/chain.h"
#include "include/flowkey.h"
#include "include/ports.h"

#ifndef SFF_MAX_PATHS
#define SFF_MAX_PATHS 1024
#endif
#ifndef SFF_MAX_NFS
#define SFF_MAX_NFS 8
#endif

/* Logical table sfc_classify: the 5-tuple as struct flow_key (exact); 0 in proto or either
 * port is a wildcard, looked up after the more specific keys. */
struct classify_entry {
	__u32 spi; /* encap(spi, si) */
	__u8 si;
};

/* Logical table sfc_hops: match (spi, si), exact. */
struct hop_key {
	__u32 spi;
	__u8 si;
	__u8 pad[3]; /* zero: the key is hashed as raw bytes */
};

enum hop_action {
	HOP_ACTION_TO_NF = 0,   /* to_nf(slot) */
	HOP_ACTION_FORWARD = 1, /* forward(egress_port, dst_mac, src_mac) */
	HOP_ACTION_DECAP = 2,   /* decap() */
};

struct hop_entry {
	enum hop_action action; /* an int-sized enum: keeps its names in the BTF */
	__u32 slot;             /* to_nf: the NF instance's slot in sfc_nfs */
	__u32 egress_port;      /* forward: ifindex, also the key of its tx_ports entry */
	__u32 stats_slot;       /* index into hop_stats, allocated by the controller */
	__u8 dst_mac[6];
	__u8 src_mac[6];
};

struct hop_stats {
	__u64 packets;
	__u64 bytes;
};

/* What happened to a packet on one pass through the forwarder: one counter each in
 * `verdicts`. An encapsulated packet counts `classified`, then the outcome of its dispatch. */
enum verdict {
	VERDICT_CLASSIFIED = 0,   /* plain IP matched sfc_classify: encapsulated */
	VERDICT_TO_NF = 1,        /* SI decremented, handed to a local NF instance */
	VERDICT_FORWARDED = 2,    /* sent to the next node */
	VERDICT_DECAPSULATED = 3, /* NSH removed: on to the router */
	VERDICT_UNCLASSIFIED = 4, /* plain IP that no rule matches: on to the router */
	VERDICT_NOT_IP = 5,       /* neither IP nor NSH (ARP...): on to the router */
	VERDICT_NO_HOP = 6,       /* dropped: no sfc_hops entry, or to_nf at SI 0 */
	VERDICT_NO_NF = 7,        /* dropped: to_nf's slot holds no program */
	VERDICT_TTL_EXPIRED = 8,  /* dropped: the NSH TTL ran out on the way to the next node */
	VERDICT_TOO_BIG = 9,      /* dropped: over the egress MTU with its NSH, or no room for one */
	VERDICT_NO_PORT = 10,     /* dropped: egress port missing from tx_ports */
	VERDICT_MALFORMED = 11,   /* dropped: truncated NSH, another version, or inner protocol not IP */
	VERDICT_MAX = 12,
};

/* The same order as enum verdict; the controller reads the counters by these names. */
struct verdict_counts {
	__u64 classified;
	__u64 to_nf;
	__u64 forwarded;
	__u64 decapsulated;
	__u64 unclassified;
	__u64 not_ip;
	__u64 no_hop;
	__u64 no_nf;
	__u64 ttl_expired;
	__u64 too_big;
	__u64 no_port;
	__u64 malformed;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct classify_entry);
	__uint(max_entries, SFF_MAX_PATHS);
} sfc_classify SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct hop_key);
	__type(value, struct hop_entry);
	__uint(max_entries, SFF_MAX_PATHS);
} sfc_hops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hop_stats);
	__uint(max_entries, SFF_MAX_PATHS);
} hop_stats SEC(".maps");

/* The NF instances behind this forwarder; the controller fills the slots. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, SFF_MAX_NFS);
} sfc_nfs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct verdict_counts);
	__uint(max_entries, 1);
} verdicts SEC(".maps");

static __always_inline void count(enum verdict v, __s64 delta)
{
	__u32 key = 0;
	__u64 *counts = bpf_map_lookup_elem(&verdicts, &key);

	if (counts && v < VERDICT_MAX)
		counts[v] += delta;
}

static __always_inline int verdict(enum verdict v, int action)
{
	count(v, 1);
	return action;
}

/* The classifier rule for a plain IP frame, most specific first: the 5-tuple, then with the
 * source port a wildcard (a service's server port: clients pick their own), then the
 * destination port, then (addresses, protocol), then the addresses alone. NULL: no rule, or
 * not parseable. */
static __always_inline struct classify_entry *classify(void *data, void *data_end)
{
	struct classify_entry *rule;
	struct flow_key key;
	__u16 src_port;

	if (parse_flow_key(data, data_end, &key, FLOW_KEY_5TUPLE))
		return NULL;
	rule = bpf_map_lookup_elem(&sfc_classify, &key);
	if (rule)
		return rule;
	src_port = key.src_port;
	key.src_port = 0;
	rule = bpf_map_lookup_elem(&sfc_classify, &key);
	if (rule)
		return rule;
	key.src_port = src_port;
	key.dst_port = 0;
	rule = bpf_map_lookup_elem(&sfc_classify, &key);
	if (rule)
		return rule;
	key.src_port = 0;
	rule = bpf_map_lookup_elem(&sfc_classify, &key);
	if (rule)
		return rule;
	key.proto = 0;
	return bpf_map_lookup_elem(&sfc_classify, &key);
}

/* Push an NSH (MD type 2 without context headers: 8 bytes) between the Ethernet header and
 * the IP packet. Any Ethernet padding stays behind the inner packet: the router that
 * routes it after decapsulation trims it. Returns -1 when the frame has no headroom. */
static __always_inline int encapsulate(struct xdp_md *ctx, __u32 spi, __u8 si, __u8 next_proto)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u8 macs[2 * ETH_ALEN];
	struct ethhdr *eth;
	struct nshhdr *nsh;

	if (data + sizeof(macs) > data_end)
		return -1;
	__builtin_memcpy(macs, data, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(*nsh)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	nsh = (void *)(eth + 1);
	if ((void *)(nsh + 1) > data_end)
		return -1;
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = bpf_htons(ETH_P_NSH);
	nsh->ver_ttl_len = bpf_htons(NSH_VERSION << 14 | NSH_TTL_MAX << 6 | NSH_LEN_MIN);
	nsh->md_type = NSH_MD_TYPE_2;
	nsh->next_proto = next_proto;
	nsh->path = bpf_htonl(spi << 8 | si);
	return 0;
}

/* to_nf: the NF owns this index; it sees the packet with the next one (RFC 8300: each
 * service function decrements SI). A tail call that returns found the slot empty. */
static __always_inline int to_nf(struct xdp_md *ctx, struct nshhdr *nsh, __u32 slot)
{
	__u8 *si = (__u8 *)&nsh->path + 3; /* the last byte of the service path header */

	if (*si == 0)
		return verdict(VERDICT_NO_HOP, XDP_DROP);
	*si -= 1;
	count(VERDICT_TO_NF, 1); /* counted before: a tail call that succeeds does not return */
	bpf_tail_call(ctx, &sfc_nfs, slot);
	count(VERDICT_TO_NF, -1);
	return verdict(VERDICT_NO_NF, XDP_DROP);
}

/* forward: on to the next node's forwarder. The NSH TTL falls by one per node it leaves
 * (RFC 8300: 0 counts as 64, and a packet whose TTL reaches 0 is not forwarded). The MTU
 * check covers the NSH: dropped rather than sent to the kernel, which would route the
 * packet around the chain or drop the NSH frame anyway. */
static __always_inline int forward(struct xdp_md *ctx, struct ethhdr *eth, struct nshhdr *nsh,
				   struct hop_entry *hop)
{
	__u8 ttl = (nsh_ttl(nsh) - 1) & NSH_TTL_MAX;
	__u32 mtu = 0;

	if (ttl == 0)
		return verdict(VERDICT_TTL_EXPIRED, XDP_DROP);
	if (bpf_check_mtu(ctx, hop->egress_port, &mtu, 0, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return verdict(VERDICT_TOO_BIG, XDP_DROP);
	if (bpf_redirect_map(&tx_ports, hop->egress_port, XDP_DROP) != XDP_REDIRECT)
		return verdict(VERDICT_NO_PORT, XDP_DROP);
	nsh_set_ttl(nsh, ttl);
	__builtin_memcpy(eth->h_dest, hop->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, hop->src_mac, ETH_ALEN);
	return verdict(VERDICT_FORWARDED, XDP_REDIRECT);
}

/* decap: the chain ends here; the original packet goes on to the router behind. */
static __always_inline int decapsulate(struct xdp_md *ctx, struct ethhdr *eth, struct nshhdr *nsh)
{
	__u8 macs[2 * ETH_ALEN];
	__be16 proto;

	if (nsh->next_proto == NSH_NP_IPV4)
		proto = bpf_htons(ETH_P_IP);
	else if (nsh->next_proto == NSH_NP_IPV6)
		proto = bpf_htons(ETH_P_IPV6);
	else
		return verdict(VERDICT_MALFORMED, XDP_DROP);
	__builtin_memcpy(macs, eth, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, nsh_len_bytes(nsh)))
		return verdict(VERDICT_MALFORMED, XDP_DROP);
	eth = (void *)(long)ctx->data;
	if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
		return verdict(VERDICT_MALFORMED, XDP_DROP);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = proto;
	count(VERDICT_DECAPSULATED, 1);
	return chain_pass(ctx);
}

/* An NSH frame: look its (SPI, SI) up and do what the entry says. */
static __always_inline int dispatch(struct xdp_md *ctx)
{
	struct cursor c = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end };
	struct ethhdr *eth = parse_ethhdr(&c);
	struct hop_key key = {};
	struct hop_entry *hop;
	struct hop_stats *stats;
	struct nshhdr *nsh;

	if (!eth)
		return verdict(VERDICT_MALFORMED, XDP_DROP);
	nsh = parse_nshhdr(&c);
	if (!nsh)
		return verdict(VERDICT_MALFORMED, XDP_DROP);
	key.spi = nsh_spi(nsh);
	key.si = nsh_si(nsh);
	hop = bpf_map_lookup_elem(&sfc_hops, &key);
	if (!hop)
		return verdict(VERDICT_NO_HOP, XDP_DROP);
	stats = bpf_map_lookup_elem(&hop_stats, &hop->stats_slot);
	if (stats) {
		stats->packets += 1;
		stats->bytes += bpf_xdp_get_buff_len(ctx);
	}
	switch (hop->action) {
	case HOP_ACTION_TO_NF:
		return to_nf(ctx, nsh, hop->slot);
	case HOP_ACTION_FORWARD:
		return forward(ctx, eth, nsh, hop);
	case HOP_ACTION_DECAP:
		return decapsulate(ctx, eth, nsh);
	}
	return verdict(VERDICT_NO_HOP, XDP_DROP); /* an action code this program does not know */
}

SEC("xdp")
int sff(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct classify_entry *rule;
	struct ethhdr *eth = data;
	__u8 next_proto;
	__u32 spi;
	__u8 si;

	if ((void *)(eth + 1) > data_end) {
		count(VERDICT_NOT_IP, 1);
		return chain_pass(ctx);
	}
	if (eth->h_proto == bpf_htons(ETH_P_NSH))
		return dispatch(ctx);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		next_proto = NSH_NP_IPV4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		next_proto = NSH_NP_IPV6;
	} else {
		count(VERDICT_NOT_IP, 1);
		return chain_pass(ctx);
	}
	rule = classify(data, data_end);
	if (!rule) {
		count(VERDICT_UNCLASSIFIED, 1);
		return chain_pass(ctx);
	}
	spi = rule->spi;
	si = rule->si;
	if (encapsulate(ctx, spi, si, next_proto))
		return verdict(VERDICT_TOO_BIG, XDP_DROP);
	count(VERDICT_CLASSIFIED, 1);
	return dispatch(ctx);
}

char LICENSE[] SEC("license") = "GPL";
