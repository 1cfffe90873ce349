/* The MAC address of each interface an NF runs on: `port_macs`, a table keyed by ifindex.
 *
 * The controller (controller/targets/xdp.py, PORT_MACS_MAP) fills it beside tx_ports with the
 * addresses the interfaces have in the node's namespace. An NF that routes compares a frame's
 * Ethernet destination with its ingress interface's address, as the kernel does when it sorts
 * frames into PACKET_HOST, PACKET_OTHERHOST and link-layer broadcast/multicast.
 *
 * It is an array, not a hash: an array lookup is inlined (a hash lookup cost NFRouter about
 * 30 ns a packet). An interface's entry sits in slot ifindex % PORT_MAC_SLOTS or, if another
 * interface holds that one, in one of the next PORT_MAC_PROBES - 1 slots (wrapping); an
 * entry names its ifindex, and an empty slot (ifindex 0) ends the search.
 */
#ifndef INNET_PORT_MACS_H
#define INNET_PORT_MACS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#define PORT_MAC_SLOTS 256   /* a power of two, 4 x MAX_PORTS of include/ports.h */
#define PORT_MAC_PROBES 4

struct port_mac {
	__u32 ifindex;
	__u8 addr[ETH_ALEN];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct port_mac);
	__uint(max_entries, PORT_MAC_SLOTS);
} port_macs SEC(".maps");

enum l2_class {
	L2_HOST,      /* addressed to the ingress interface */
	L2_GROUP,     /* broadcast or multicast: the group bit of the first octet */
	L2_OTHERHOST, /* another station's unicast address */
	L2_UNKNOWN,   /* the ingress interface has no entry in port_macs */
};

static __always_inline struct port_mac *port_mac_of(__u32 ifindex)
{
	struct port_mac *entry;
	__u32 slot;
	int i;

#pragma unroll
	for (i = 0; i < PORT_MAC_PROBES; i++) {
		slot = (ifindex + i) & (PORT_MAC_SLOTS - 1);
		entry = bpf_map_lookup_elem(&port_macs, &slot);
		if (!entry || entry->ifindex == 0)
			return NULL;
		if (entry->ifindex == ifindex)
			return entry;
	}
	return NULL;
}

/* How the kernel would classify the frame's destination on interface `ifindex`. */
static __always_inline enum l2_class classify_l2_dest(const __u8 *dest, __u32 ifindex)
{
	struct port_mac *own;

	if (dest[0] & 1)
		return L2_GROUP;
	own = port_mac_of(ifindex);
	if (!own)
		return L2_UNKNOWN;
	/* 6 bytes as a 4-byte and a 2-byte word: one comparison each */
	if (*(__u32 *)dest != *(__u32 *)own->addr || *(__u16 *)(dest + 4) != *(__u16 *)(own->addr + 4))
		return L2_OTHERHOST;
	return L2_HOST;
}

#endif
