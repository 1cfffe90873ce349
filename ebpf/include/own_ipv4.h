/* The node's own IPv4 addresses: `own_ipv4`, an array the controller fills.
 *
 * The controller (controller/targets/xdp.py, OWN_IPV4_MAP) writes every IPv4 address of the
 * node's namespace into it when it deploys the NF, the addresses the kernel holds in its
 * `local` table. An NF that routes checks a packet's source against them, as the kernel's
 * fib_validate_source does.
 *
 * It is an array, not a hash or an LPM trie: an array lookup is inlined (an LPM lookup of the
 * source cost NFRouter about 11 ns a packet). An address sits in slot own_ipv4_slot(address)
 * or, if another address holds that one, in one of the next OWN_IPV4_PROBES - 1 slots
 * (wrapping); an empty slot (0.0.0.0, never an interface's address) ends the search. Slots
 * hold and compare addresses as the packet carries them (network byte order).
 */
#ifndef INNET_OWN_IPV4_H
#define INNET_OWN_IPV4_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define OWN_IPV4_SLOT_BITS 10   /* 1024 slots: 128 addresses fit whatever they are */
#define OWN_IPV4_SLOTS (1 << OWN_IPV4_SLOT_BITS)
#define OWN_IPV4_PROBES 8
#define OWN_IPV4_HASH 0x9E3779B1u   /* Fibonacci hashing: the multiplier's top bits spread addresses */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, OWN_IPV4_SLOTS);
} own_ipv4 SEC(".maps");

/* The first slot of `addr`: the top bits of its 32-bit word times OWN_IPV4_HASH. */
static __always_inline __u32 own_ipv4_slot(__u32 addr)
{
	return (addr * OWN_IPV4_HASH) >> (32 - OWN_IPV4_SLOT_BITS);
}

static __always_inline int is_own_ipv4(__be32 addr)
{
	__u32 first = own_ipv4_slot(addr), slot, *own;
	int i;

#pragma unroll
	for (i = 0; i < OWN_IPV4_PROBES; i++) {
		slot = (first + i) & (OWN_IPV4_SLOTS - 1);
		own = bpf_map_lookup_elem(&own_ipv4, &slot);
		if (!own || *own == 0)
			return 0;
		if (*own == addr)
			return 1;
	}
	return 0;
}

#endif
