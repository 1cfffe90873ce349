/* Flow identity for innet's measurement and QoS programs (cms, precision, prio).
 *
 * One key layout for IPv4 and IPv6: addresses in network byte order, an IPv4
 * address as its IPv4-mapped IPv6 address (::ffff:a.b.c.d), ports in host byte
 * order, and ports 0 for protocols without ports, for non-first fragments and
 * for every packet in key mode 1 (address pair). The key is zeroed before it is
 * filled, so it can be hashed and compared as raw bytes.
 *
 * In an NSH frame (RFC 8300: Ethernet / NSH / IPv4 or IPv6) the key is the inner
 * packet's: NFs in a service chain see the flow the chain carries.
 *
 * The parser takes (data, data_end), so it serves XDP (ctx->data) and tc
 * (__sk_buff->data) alike. It reads only the headers the key needs and checks
 * each against data_end first; on tc only the linear part of the skb is visible,
 * so a caller that may see non-linear skbs pulls the headers in first
 * (bpf_skb_pull_data).
 */
#ifndef INNET_FLOWKEY_H
#define INNET_FLOWKEY_H

#include "parsing.h"

#define FLOW_KEY_5TUPLE 0
#define FLOW_KEY_ADDR_PAIR 1

/* IPv6 extension headers skipped on the way to the transport header; more than
 * this many and the packet is keyed by the last extension header, without ports. */
#define FLOW_KEY_MAX_IPV6_EXT 4
#define IPPROTO_FRAGMENT_HDR 44

/* The key's fields; flow-table cells (cms candidates, precision slots) start with them
 * too, as top-level members, where the controller finds them by name through BTF. */
#define FLOW_KEY_FIELDS        \
	__u8 src_addr[16];     \
	__u8 dst_addr[16];     \
	__u16 src_port;        \
	__u16 dst_port;        \
	__u8 proto;            \
	__u8 pad[3];

struct flow_key {
	FLOW_KEY_FIELDS
} __attribute__((aligned(4))); /* so it can be hashed as 32-bit words */

/* Protocols whose header starts with 16-bit source and destination ports. */
static __always_inline int proto_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP ||
	       proto == IPPROTO_UDPLITE;
}

/* Reads the ports at `l4` into the key; -1 when they lie past data_end. */
static __always_inline int parse_ports(void *l4, void *data_end, struct flow_key *key)
{
	__u16 *ports = l4;

	if ((void *)(ports + 2) > data_end)
		return -1;
	key->src_port = bpf_ntohs(ports[0]);
	key->dst_port = bpf_ntohs(ports[1]);
	return 0;
}

static __always_inline int parse_ipv4_key(struct cursor *c, struct flow_key *key, int key_mode,
					  __u8 *dscp)
{
	struct iphdr *iph = parse_iphdr(c);
	__u32 ihl_bytes;

	if (!iph || iph->version != 4 || iph->ihl < 5)
		return -1;
	ihl_bytes = iph->ihl * 4;
	if (bpf_ntohs(iph->tot_len) < ihl_bytes)
		return -1;
	key->src_addr[10] = 0xff;
	key->src_addr[11] = 0xff;
	key->dst_addr[10] = 0xff;
	key->dst_addr[11] = 0xff;
	__builtin_memcpy(&key->src_addr[12], &iph->saddr, 4);
	__builtin_memcpy(&key->dst_addr[12], &iph->daddr, 4);
	key->proto = iph->protocol;
	*dscp = iph->tos >> 2;

	/* only the first fragment carries the transport header */
	if (key_mode != FLOW_KEY_5TUPLE || !proto_has_ports(iph->protocol) ||
	    (bpf_ntohs(iph->frag_off) & IPV4_FRAG_OFFSET))
		return 0;
	return parse_ports((void *)iph + ihl_bytes, c->end, key);
}

/* The IPv6 extension headers that sit between the fixed header and the transport. */
static __always_inline int ipv6_is_ext_hdr(__u8 nexthdr)
{
	return nexthdr == 0 /* hop-by-hop */ || nexthdr == 43 /* routing */ ||
	       nexthdr == 60 /* destination options */ || nexthdr == IPPROTO_FRAGMENT_HDR;
}

static __always_inline int parse_ipv6_key(struct cursor *c, struct flow_key *key, int key_mode,
					  __u8 *dscp)
{
	struct ipv6hdr *ip6h = parse_ipv6hdr(c);
	void *pos;
	__u8 nexthdr;

	if (!ip6h || ip6h->version != 6)
		return -1;
	__builtin_memcpy(key->src_addr, &ip6h->saddr, 16);
	__builtin_memcpy(key->dst_addr, &ip6h->daddr, 16);
	*dscp = ((ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4)) >> 2;
	nexthdr = ip6h->nexthdr;
	pos = c->pos;

#pragma unroll
	for (int i = 0; i < FLOW_KEY_MAX_IPV6_EXT; i++) {
		__u8 *ext = pos;
		int first_fragment;

		if (!ipv6_is_ext_hdr(nexthdr))
			break;
		if ((void *)(ext + 8) > c->end)
			return -1;
		if (nexthdr == IPPROTO_FRAGMENT_HDR) {
			/* fragment offset: the upper 13 bits of bytes 2-3 */
			first_fragment = ((ext[2] << 8 | ext[3]) & 0xfff8) == 0;
			nexthdr = ext[0];
			pos = ext + 8;
			if (!first_fragment) {
				key->proto = nexthdr;
				return 0;
			}
		} else {
			nexthdr = ext[0];
			pos = ext + (ext[1] + 1) * 8;
		}
	}
	key->proto = nexthdr;
	if (key_mode != FLOW_KEY_5TUPLE || !proto_has_ports(nexthdr))
		return 0;
	return parse_ports(pos, c->end, key);
}

/* Fills `key` (and the packet's DSCP, 0..63) from the Ethernet frame at data; for an
 * NSH frame (a service chain's), from the IPv4/IPv6 packet inside it, so an NF behind a
 * service function forwarder measures and classifies the flow it carries.
 * Returns 0, or -1 when the frame is not IPv4/IPv6 (or NSH around one) or the headers
 * the key needs are truncated. */
static __always_inline int parse_flow_key_dscp(void *data, void *data_end, struct flow_key *key,
					       int key_mode, __u8 *dscp)
{
	struct cursor c = { .pos = data, .end = data_end };
	struct ethhdr *eth = parse_ethhdr(&c);
	struct nshhdr *nsh;

	__builtin_memset(key, 0, sizeof(*key));
	*dscp = 0;
	if (!eth)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4_key(&c, key, key_mode, dscp);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6_key(&c, key, key_mode, dscp);
	if (eth->h_proto != bpf_htons(ETH_P_NSH))
		return -1;
	nsh = parse_nshhdr(&c);
	if (!nsh)
		return -1;
	if (nsh->next_proto == NSH_NP_IPV4)
		return parse_ipv4_key(&c, key, key_mode, dscp);
	if (nsh->next_proto == NSH_NP_IPV6)
		return parse_ipv6_key(&c, key, key_mode, dscp);
	return -1;
}

static __always_inline int parse_flow_key(void *data, void *data_end, struct flow_key *key,
					  int key_mode)
{
	__u8 dscp;

	return parse_flow_key_dscp(data, data_end, key, key_mode, &dscp);
}

/* True when the 40 bytes at `stored` (a map value laid out as struct flow_key)
 * hold `key`; compared as 32-bit words, so `stored` must be 4-byte aligned. */
static __always_inline int flow_key_equal(const void *stored, const struct flow_key *key)
{
	const __u32 *a = stored, *b = (const __u32 *)key;
	__u32 diff = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*key) / 4); i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* Seeded 32-bit hash of the key: MurmurHash3_x86_32 over its ten 32-bit words.
 * Each seed gives a different function of the whole key, so rows of a sketch
 * (or stages of PRECISION) hashed with different seeds collide independently. */
static __always_inline __u32 flow_key_hash(const struct flow_key *key, __u32 seed)
{
	const __u32 *words = (const __u32 *)key;
	__u32 h = seed;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*key) / 4); i++) {
		__u32 k = words[i] * 0xcc9e2d51;

		k = rotl32(k, 15) * 0x1b873593;
		h ^= k;
		h = rotl32(h, 13) * 5 + 0xe6546b64;
	}
	h ^= sizeof(*key);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

#endif /* INNET_FLOWKEY_H */
