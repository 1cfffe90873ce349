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
#include "include/own_ipv4.h"
#include "include/port_macs.h"
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
	VERDICT_DROP_OTHER_HOST = 9,  /* another station's MAC: the kernel drops PACKET_OTHERHOST */
	VERDICT_PASS_L2_BROADCAST = 10, /* broadcast/multicast MAC: the kernel never forwards it */
	VERDICT_DROP_MARTIAN_SOURCE = 11, /* loopback, unspecified, multicast, broadcast source */
	VERDICT_PASS_LOCAL_SOURCE = 12, /* IPv4 source is one of the node's own (own_ipv4) */
	VERDICT_PASS_HAIRPIN = 13,    /* egress == ingress: the kernel also sends a redirect */
	VERDICT_MAX = 14,
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
	__u64 drop_other_host;
	__u64 pass_l2_broadcast;
	__u64 drop_martian_source;
	__u64 pass_local_source;
	__u64 pass_hairpin;
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

/* The link-layer rule: only a frame addressed to its ingress interface is routed (Linux's
 * ip_forward takes PACKET_HOST frames only). VERDICT_FORWARDED: it may be forwarded. The
 * controller describes every interface the program is attached to; an ingress it did not
 * describe (a BPF_PROG_TEST_RUN's loopback) has no address to compare with, so the rule
 * does not apply there. */
static __always_inline enum verdict l2_rule(struct xdp_md *ctx, struct ethhdr *eth)
{
	switch (classify_l2_dest(eth->h_dest, ctx->ingress_ifindex)) {
	case L2_GROUP:
		return VERDICT_PASS_L2_BROADCAST;
	case L2_OTHERHOST:
		return VERDICT_DROP_OTHER_HOST;
	default:
		return VERDICT_FORWARDED;
	}
}

/* Count `v` and drop the packet (drop_*) or hand it to the kernel (pass_*). */
static __always_inline int refuse(enum verdict v)
{
	return verdict(v, v == VERDICT_DROP_OTHER_HOST || v == VERDICT_DROP_MARTIAN_SOURCE ? XDP_DROP : XDP_PASS);
}

/* Sources ip_route_input_slow calls martian: multicast, limited broadcast, 0.0.0.0 (the rest
 * of 0/8 is forwarded since Linux 5.3) and loopback (127/8). `src` in host order. */
static __always_inline int ipv4_martian_source(__u32 src)
{
	return (src >> 28) == 0xe || src == 0xffffffff || src == 0 || (src >> 24) == 127;
}

/* Sources ip6_rcv_core and ip6_forward drop: multicast, unspecified (::) and loopback (::1). */
static __always_inline int ipv6_martian_source(const struct in6_addr *src)
{
	const __u32 *w = src->in6_u.u6_addr32;

	if (src->in6_u.u6_addr8[0] == 0xff)
		return 1;
	return (w[0] | w[1] | w[2]) == 0 && (w[3] == 0 || w[3] == bpf_htonl(1));
}

/* Forward the frame to route->egress_port, or tell why not. `l2_len` is the frame length the
 * IP header accounts for; the MTU check is given the IP length (the L3 length the kernel
 * checks), so Ethernet padding does not count and the frame's length is not needed. The
 * caller decrements TTL/hop limit only after this returns XDP_REDIRECT, so a packet handed to
 * the kernel is untouched. */
static __always_inline int redirect_to_next_hop(struct xdp_md *ctx, struct route_entry *route,
						__u32 l2_len, enum verdict *why)
{
	__u32 mtu_len = l2_len - ETH_HLEN;
	struct route_stats *stats;
	long action;

	if (route->action == ROUTE_ACTION_LOCAL) {
		*why = VERDICT_PASS_LOCAL;
		return XDP_PASS;
	}
	if (bpf_check_mtu(ctx, route->egress_port, &mtu_len, 0, 0) != BPF_MTU_CHK_RET_SUCCESS) {
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

/* Trim any Ethernet padding past the first `l2_len` bytes of the frame, as the kernel does, so
 * both paths emit the same bytes. A pointer comparison spots padding: only a padded frame pays
 * for the length helper (a call costs about 8 ns). */
static __always_inline int trim_padding(struct xdp_md *ctx, void *frame, void *end, __u32 l2_len)
{
	if (frame + l2_len >= end)
		return 0;
	return bpf_xdp_adjust_tail(ctx, -(int)(bpf_xdp_get_buff_len(ctx) - l2_len));
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
	why = l2_rule(ctx, eth);
	if (why != VERDICT_FORWARDED)
		return refuse(why);
	if (ipv4_martian_source(bpf_ntohl(iph->saddr)))
		return refuse(VERDICT_DROP_MARTIAN_SOURCE);
	if (iph->ttl <= 1)
		return verdict(VERDICT_PASS_TTL_EXPIRED, XDP_PASS);

	__builtin_memcpy(key.dst_addr, &iph->daddr, sizeof(key.dst_addr));
	route = bpf_map_lookup_elem(&ipv4_routes, &key);
	if (!route)
		return verdict(VERDICT_PASS_NO_ROUTE, XDP_PASS);
	if (route->action == ROUTE_ACTION_FORWARD) {
		if (route->egress_port == ctx->ingress_ifindex)
			return verdict(VERDICT_PASS_HAIRPIN, XDP_PASS);
		/* Linux's fib_validate_source refuses them, unless accept_local says otherwise */
		if (is_own_ipv4(iph->saddr))
			return verdict(VERDICT_PASS_LOCAL_SOURCE, XDP_PASS);
		route = flow_route(route, iph, c->end, 0);
	}

	action = redirect_to_next_hop(ctx, route, l2_len, &why);
	if (action == XDP_REDIRECT) {
		ipv4_decrement_ttl(iph);
		rewrite_macs(eth, route);
		if (trim_padding(ctx, eth, c->end, l2_len))
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
	why = l2_rule(ctx, eth);
	if (why != VERDICT_FORWARDED)
		return refuse(why);
	if (ipv6_martian_source(&ip6h->saddr))
		return refuse(VERDICT_DROP_MARTIAN_SOURCE);
	if (ip6h->hop_limit <= 1)
		return verdict(VERDICT_PASS_TTL_EXPIRED, XDP_PASS);

	__builtin_memcpy(key.dst_addr, &ip6h->daddr, sizeof(key.dst_addr));
	route = bpf_map_lookup_elem(&ipv6_routes, &key);
	if (!route)
		return verdict(VERDICT_PASS_NO_ROUTE, XDP_PASS);
	if (route->action == ROUTE_ACTION_FORWARD) {
		if (route->egress_port == ctx->ingress_ifindex)
			return verdict(VERDICT_PASS_HAIRPIN, XDP_PASS);
		route = flow_route(route, ip6h, c->end, 1);
	}

	action = redirect_to_next_hop(ctx, route, l2_len, &why);
	if (action == XDP_REDIRECT) {
		ip6h->hop_limit--;
		rewrite_macs(eth, route);
		if (trim_padding(ctx, eth, c->end, l2_len))
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
