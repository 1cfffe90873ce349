/* The egress ports of an NF that redirects: `tx_ports`, a DEVMAP keyed by ifindex.
 *
 * The controller (controller/targets/xdp.py, PORT_MAP) puts every interface the NF runs on in
 * it, resolving ifindexes in the node's namespace; bpf_redirect_map through it sends a frame
 * out of one of them, and an ifindex missing from it is the NF's "no port" case.
 */
#ifndef INNET_PORTS_H
#define INNET_PORTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_PORTS 64

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_PORTS);
} tx_ports SEC(".maps");

#endif
