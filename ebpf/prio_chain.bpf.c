// SPDX-License-Identifier: GPL-2.0
/* prio as a hop of an XDP service chain: the program a prio instance runs behind a service
 * function forwarder (sff, in a slot of its sfc_nfs). It classifies the packet the NSH frame
 * carries (a plain frame too) into one of PRIO_LEVELS levels with prio's own tables and counts
 * it there (include/prio.h), then hands every frame on, unchanged, through chain_pass: back to
 * the forwarder, which dispatches it on its next service index.
 *
 * The level does not queue the packet: what follows a forwarder is an XDP redirect or the
 * next XDP program, and neither meets a qdisc (see nfs/prio.yaml). Bytes are the frame as the
 * hop sees it (NSH included), as cms and precision count them behind the forwarder.
 */
#include "include/chain.h"
#include "include/prio.h"

SEC("xdp")
int prio_chain(struct xdp_md *ctx)
{
	__u32 level;

	prio_classify_frame((void *)(long)ctx->data, (void *)(long)ctx->data_end,
			    bpf_xdp_get_buff_len(ctx), &level);
	return chain_pass(ctx);
}

char LICENSE[] SEC("license") = "GPL";
