/* Shared packet-parsing helpers for innet's XDP programs.
 *
 * Every helper checks bounds against data_end before touching a header, so the
 * verifier accepts the callers and a truncated frame can never be read past its end.
 */
#ifndef INNET_PARSING_H
#define INNET_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IPV4_FLAG_MF 0x2000
#define IPV4_FRAG_OFFSET 0x1fff

struct cursor {
	void *pos;
	void *end;
};

/* Returns the Ethernet header or NULL when the frame is shorter than one. */
static __always_inline struct ethhdr *parse_ethhdr(struct cursor *c)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > c->end)
		return NULL;
	c->pos = eth + 1;
	return eth;
}

/* Returns the fixed 20-byte IPv4 header or NULL when it is truncated. */
static __always_inline struct iphdr *parse_iphdr(struct cursor *c)
{
	struct iphdr *iph = c->pos;

	if ((void *)(iph + 1) > c->end)
		return NULL;
	c->pos = iph + 1;
	return iph;
}

/* Returns the fixed 40-byte IPv6 header or NULL when it is truncated. */
static __always_inline struct ipv6hdr *parse_ipv6hdr(struct cursor *c)
{
	struct ipv6hdr *ip6h = c->pos;

	if ((void *)(ip6h + 1) > c->end)
		return NULL;
	c->pos = ip6h + 1;
	return ip6h;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* True when a 20-byte IPv4 header (no options) carries a valid checksum. */
static __always_inline int ipv4_csum_ok(struct iphdr *iph)
{
	__u16 *words = (__u16 *)iph;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += words[i];
	return csum_fold(sum) == 0;
}

/* RFC 1624 incremental update for a TTL decrement, written as the kernel's
 * ip_decrease_ttl() so both paths emit the same checksum bytes. */
static __always_inline void ipv4_decrement_ttl(struct iphdr *iph)
{
	__u32 check = (__u32)iph->check + (__u32)bpf_htons(0x0100);

	iph->check = (__u16)(check + (check >= 0xFFFF));
	iph->ttl--;
}

#endif /* INNET_PARSING_H */
