// SPDX-License-Identifier: GPL-2.0
/* NFRouter: IPv4/IPv6 longest-prefix-match forwarding in XDP.
 *
 * The fast path forwards only what it can forward exactly as the Linux kernel
 * would (same bytes out); everything else is handed to the kernel unchanged with
 * XDP_PASS, and the reason is counted in `verdicts`. The controller installs every
 * route in both the LPM tables here and the node's kernel FIB, so the slow path
 * agrees with the fast path.
 */
#include "include/flowkey.h"
#include "include/ports.h"

#ifndef MAX_ROUTES
#define MAX_ROUTES 1024
#endif
#ifndef MAX_FLOW_ROUTES
#define MAX_FLOW_ROUTES 1024
#endif

/* Logical table ipv4_routes / ipv6_routes: match dst_addr (lpm). */
struct ipv4_lpm_key {
	__u32 prefixlen;
	__u8 dst_addr[4];
};

struct ipv6_lpm_key {
	__u32 prefixlen;
	__u8 dst_addr[16];
};

enum route_action {
	ROUTE_ACTION_FORWARD = 0, /* forward(egress_port, dst_mac, src_mac) */
	ROUTE_ACTION_LOCAL = 1,   /* local(): deliver to the node's own stack */
};

/* The value of ipv4_routes, ipv6_routes and flow_routes (whose entries are all `forward`). */
struct route_entry {
	enum route_action action; /* an int-sized enum: keeps its names in the BTF */
	__u32 egress_port; /* ifindex, also the key of its tx_ports entry */
	__u32 stats_slot;  /* index into route_stats, allocated by the controller */
	__u8 dst_mac[6];
	__u8 src_mac[6];
};

struct route_stats {
	__u64 packets;
	__u64 bytes;
};

/* Why a packet went where it went: one counter each in `verdicts`. */
enum verdict {
	VERDICT_FORWARDED = 0,
	VERDICT_PASS_NOT_IP = 1,      /* ARP, LLDP, ...: the kernel's business */
	VERDICT_PASS_MALFORMED = 2,   /* truncated, bad version/IHL/length/checksum */
	VERDICT_PASS_IP_OPTIONS = 3,  /* IPv4 options or IPv6 hop-by-hop header */
	VERDICT_PASS_TTL_EXPIRED = 4, /* the kernel answers ICMP time exceeded */
	VERDICT_PASS_NO_ROUTE = 5,    /* the kernel answers ICMP unreachable */
	VERDICT_PASS_LOCAL = 6,       /* for this node, multicast, link-local */
	VERDICT_PASS_TOO_BIG = 7,     /* the kernel fragments or answers ICMP */
	VERDICT_PASS_NO_PORT = 8,     /* egress port missing from tx_ports */
	VERDICT_MAX = 9,
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipv4_lpm_key);
	__type(value, struct route_entry);
	__uint(max_entries, MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipv4_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipv6_lpm_key);
	__type(value, struct route_entry);
	__uint(max_entries, MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipv6_routes SEC(".maps");

/* Logical table flow_routes: match src_addr, dst_addr, src_port, dst_port, proto (exact;
 * the flow key of include/flowkey.h, IPv4 addresses as IPv4-mapped IPv6). A per-flow next
 * hop: it replaces the next hop of a packet the LPM routes forward, nothing else. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct route_entry);
	__uint(max_entries, MAX_FLOW_ROUTES);
} flow_routes SEC(".maps");

/* Per-entry counters of the three tables, one slot per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct route_stats);
	__uint(max_entries, 2 * MAX_ROUTES + MAX_FLOW_ROUTES);
} route_stats SEC(".maps");

/* The same order as enum verdict; the controller reads the counters by these names. */
struct verdict_counts {
	__u64 forwarded;
	__u64 pass_not_ip;
	__u64 pass_malformed;
	__u64 pass_ip_options;
	__u64 pass_ttl_expired;
	__u64 pass_no_route;
	__u64 pass_local;
	__u64 pass_too_big;
	__u64 pass_no_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct verdict_counts);
	__uint(max_entries, 1);
} verdicts SEC(".maps");

/* Non-zero while flow_routes may hold entries: the controller sets it before writing the first
 * and clears it once the table is empty (catalog `gate`), so routers without overrides skip
 * the key and the hash lookup (about 35 ns a packet). An array lookup of key 0 is inlined. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} flow_routes_gate SEC(".maps");

/* The packet's flow_routes entry, if any, else `route`. `ip` is the (already validated) IP
 * header; a packet whose key the parser cannot read (ports past the frame's end, say) keeps
 * its route. */
static __always_inline struct route_entry *flow_route(struct route_entry *route, void *ip, void *end,
						      int v6)
{
	struct cursor c = { .pos = ip, .end = end };
	struct route_entry *override;
	struct flow_key key;
	__u32 zero = 0, *open;
	__u8 dscp;
	int bad;

	open = bpf_map_lookup_elem(&flow_routes_gate, &zero);
	if (!open || !*open)
		return route;
	__builtin_memset(&key, 0, sizeof(key));
	bad = v6 ? parse_ipv6_key(&c, &key, FLOW_KEY_5TUPLE, &dscp)
		 : parse_ipv4_key(&c, &key, FLOW_KEY_5TUPLE, &dscp);
	if (bad)
		return route;
	override = bpf_map_lookup_elem(&flow_routes, &key);
	return override ? override : route;
}

static __always_inline int verdict(enum verdict v, int action)
{
	__u32 key = 0;
	__u64 *counts = bpf_map_lookup_elem(&verdicts, &key);

	if (counts && v < VERDICT_MAX)
		counts[v] += 1;
	return action;
}

/* Forward the frame to route->egress_port, or tell why not. `l2_len` is the frame
 * length the IP header accounts for; any Ethernet padding past it is trimmed, as the
 * kernel does, so both paths emit the same bytes. The caller decrements TTL/hop limit
 * only after this returns XDP_REDIRECT, so a packet handed to the kernel is untouched. */
static __always_inline int redirect_to_next_hop(struct xdp_md *ctx, struct route_entry *route,
						__u32 l2_len, enum verdict *why)
{
	__s32 padding = (__s32)(bpf_xdp_get_buff_len(ctx) - l2_len);
	__u32 mtu = 0;
	struct route_stats *stats;
	long action;

	if (route->action == ROUTE_ACTION_LOCAL) {
		*why = VERDICT_PASS_LOCAL;
		return XDP_PASS;
	}
	if (bpf_check_mtu(ctx, route->egress_port, &mtu, -padding, 0) != BPF_MTU_CHK_RET_SUCCESS) {
		*why = VERDICT_PASS_TOO_BIG;
		return XDP_PASS;
	}
	action = bpf_redirect_map(&tx_ports, route->egress_port, XDP_PASS);
	if (action != XDP_REDIRECT) {
		*why = VERDICT_PASS_NO_PORT;
		return XDP_PASS;
	}
	stats = bpf_map_lookup_elem(&route_stats, &route->stats_slot);
	if (stats) {
		stats->packets += 1;
		stats->bytes += l2_len;
	}
	*why = VERDICT_FORWARDED;
	return XDP_REDIRECT;
}

static __always_inline void rewrite_macs(struct ethhdr *eth, struct route_entry *route)
{
	__builtin_memcpy(eth->h_dest, route->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, route->src_mac, ETH_ALEN);
}

static __always_inline int trim_padding(struct xdp_md *ctx, __u32 l2_len)
{
	__s32 padding = (__s32)(bpf_xdp_get_buff_len(ctx) - l2_len);

	if (padding > 0 && bpf_xdp_adjust_tail(ctx, -padding))
		return -1;
	return 0;
}

static __always_inline int forward_ipv4(struct xdp_md *ctx, struct cursor *c, struct ethhdr *eth)
{
	struct iphdr *iph = parse_iphdr(c);
	struct ipv4_lpm_key key = { .prefixlen = 32 };
	struct route_entry *route;
	enum verdict why;
	__u32 l2_len, dst;
	int action;

	if (!iph || iph->version != 4 || iph->ihl < 5)
		return verdict(VERDICT_PASS_MALFORMED, XDP_PASS);
	if (iph->ihl > 5)
		return verdict(VERDICT_PASS_IP_OPTIONS, XDP_PASS);
	l2_len = sizeof(*eth) + bpf_ntohs(iph->tot_len);
	if (bpf_ntohs(iph->tot_len) < sizeof(*iph) || (void *)eth + l2_len > c->end ||
	    !ipv4_csum_ok(iph))
		return verdict(VERDICT_PASS_MALFORMED, XDP_PASS);

	dst = bpf_ntohl(iph->daddr);
	/* multicast, limited broadcast, loopback and "this network" are never routed */
	if ((dst >> 28) == 0xe || dst == 0xffffffff || (dst >> 24) == 127 || (dst >> 24) == 0)
		return verdict(VERDICT_PASS_LOCAL, XDP_PASS);
	if (iph->ttl <= 1)
		return verdict(VERDICT_PASS_TTL_EXPIRED, XDP_PASS);

	__builtin_memcpy(key.dst_addr, &iph->daddr, sizeof(key.dst_addr));
	route = bpf_map_lookup_elem(&ipv4_routes, &key);
	if (!route)
		return verdict(VERDICT_PASS_NO_ROUTE, XDP_PASS);
	if (route->action == ROUTE_ACTION_FORWARD)
		route = flow_route(route, iph, c->end, 0);

	action = redirect_to_next_hop(ctx, route, l2_len, &why);
	if (action == XDP_REDIRECT) {
		ipv4_decrement_ttl(iph);
		rewrite_macs(eth, route);
		if (trim_padding(ctx, l2_len))
			action = XDP_ABORTED;
	}
	return verdict(why, action);
}

static __always_inline int forward_ipv6(struct xdp_md *ctx, struct cursor *c, struct ethhdr *eth)
{
	struct ipv6hdr *ip6h = parse_ipv6hdr(c);
	struct ipv6_lpm_key key = { .prefixlen = 128 };
	struct route_entry *route;
	enum verdict why;
	__u32 l2_len;
	__u8 dst0, dst1, src0, src1;
	int action;

	if (!ip6h || ip6h->version != 6)
		return verdict(VERDICT_PASS_MALFORMED, XDP_PASS);
	l2_len = sizeof(*eth) + sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	/* payload_len 0 is a jumbogram (or garbage): the kernel judges it */
	if (ip6h->payload_len == 0 || (void *)eth + l2_len > c->end)
		return verdict(VERDICT_PASS_MALFORMED, XDP_PASS);
	if (ip6h->nexthdr == 0 /* hop-by-hop options */)
		return verdict(VERDICT_PASS_IP_OPTIONS, XDP_PASS);

	dst0 = ip6h->daddr.in6_u.u6_addr8[0];
	dst1 = ip6h->daddr.in6_u.u6_addr8[1];
	src0 = ip6h->saddr.in6_u.u6_addr8[0];
	src1 = ip6h->saddr.in6_u.u6_addr8[1];
	/* multicast (ff00::/8, NDP among it) and link-local (fe80::/10) stay on the link */
	if (dst0 == 0xff || (dst0 == 0xfe && (dst1 & 0xc0) == 0x80) ||
	    (src0 == 0xfe && (src1 & 0xc0) == 0x80))
		return verdict(VERDICT_PASS_LOCAL, XDP_PASS);
	if (ip6h->hop_limit <= 1)
		return verdict(VERDICT_PASS_TTL_EXPIRED, XDP_PASS);

	__builtin_memcpy(key.dst_addr, &ip6h->daddr, sizeof(key.dst_addr));
	route = bpf_map_lookup_elem(&ipv6_routes, &key);
	if (!route)
		return verdict(VERDICT_PASS_NO_ROUTE, XDP_PASS);
	if (route->action == ROUTE_ACTION_FORWARD)
		route = flow_route(route, ip6h, c->end, 1);

	action = redirect_to_next_hop(ctx, route, l2_len, &why);
	if (action == XDP_REDIRECT) {
		ip6h->hop_limit--;
		rewrite_macs(eth, route);
		if (trim_padding(ctx, l2_len))
			action = XDP_ABORTED;
	}
	return verdict(why, action);
}

SEC("xdp")
int nfrouter(struct xdp_md *ctx)
{
	struct cursor c = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end };
	struct ethhdr *eth = parse_ethhdr(&c);

	if (!eth)
		return verdict(VERDICT_PASS_MALFORMED, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return forward_ipv4(ctx, &c, eth);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return forward_ipv6(ctx, &c, eth);
	return verdict(VERDICT_PASS_NOT_IP, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
