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

/* Network Service Header (IETF RFC 8300), carried between Ethernet and the inner packet. */
#define ETH_P_NSH 0x894F
#define NSH_VERSION 0
#define NSH_MD_TYPE_2 2       /* variable-length context headers (innet sends none) */
#define NSH_NP_IPV4 1         /* next protocol: what follows the NSH */
#define NSH_NP_IPV6 2
#define NSH_TTL_MAX 63        /* the 6-bit TTL, also RFC 8300's default initial value */
#define NSH_LEN_MIN 2         /* words: base header + service path header, no metadata */

/* The fixed part of an NSH: base header and service path header. Its 6-bit `length`
 * counts 4-byte words of the whole NSH, context headers included. */
struct nshhdr {
	__be16 ver_ttl_len;  /* version (2 bits), O, U, TTL (6 bits), length (6 bits) */
	__u8 md_type;        /* unassigned (4 bits), MD type (4 bits) */
	__u8 next_proto;
	__be32 path;         /* service path identifier (24 bits), service index (8 bits) */
};

static __always_inline __u8 nsh_version(const struct nshhdr *nsh)
{
	return bpf_ntohs(nsh->ver_ttl_len) >> 14;
}

static __always_inline __u8 nsh_ttl(const struct nshhdr *nsh)
{
	return (bpf_ntohs(nsh->ver_ttl_len) >> 6) & 0x3f;
}

static __always_inline __u32 nsh_len_bytes(const struct nshhdr *nsh)
{
	return (bpf_ntohs(nsh->ver_ttl_len) & 0x3f) * 4;
}

static __always_inline void nsh_set_ttl(struct nshhdr *nsh, __u8 ttl)
{
	__u16 word = bpf_ntohs(nsh->ver_ttl_len);

	nsh->ver_ttl_len = bpf_htons((word & ~(0x3f << 6)) | ((ttl & 0x3f) << 6));
}

static __always_inline __u32 nsh_spi(const struct nshhdr *nsh)
{
	return bpf_ntohl(nsh->path) >> 8;
}

static __always_inline __u8 nsh_si(const struct nshhdr *nsh)
{
	return bpf_ntohl(nsh->path) & 0xff;
}

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

/* Returns a version-0 NSH whose length covers at least its fixed part and lies within the
 * frame, and moves the cursor past it (context headers included); NULL otherwise. */
static __always_inline struct nshhdr *parse_nshhdr(struct cursor *c)
{
	struct nshhdr *nsh = c->pos;
	__u32 len;

	if ((void *)(nsh + 1) > c->end || nsh_version(nsh) != NSH_VERSION)
		return NULL;
	len = nsh_len_bytes(nsh);
	if (len < sizeof(*nsh) || c->pos + len > c->end)
		return NULL;
	c->pos += len;
	return nsh;
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
