/* Chaining innet's XDP programs on one hook.
 *
 * An interface's XDP hook holds one program, so several NFs on the same interface run in
 * chain order by tail calls: each pass-through NF (one that hands every packet on, such
 * as cms or precision) has its own one-slot program array `chain_next`, pinned with its
 * other maps, and ends with `return chain_pass(ctx);` where it would return XDP_PASS.
 * The controller (controller/targets/chain.py) fills the slot with the next NF's program,
 * or leaves it empty when the NF is the chain's last; an empty slot makes the tail call
 * fall through, and the packet goes to the kernel as before.
 */
#ifndef INNET_CHAIN_H
#define INNET_CHAIN_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} chain_next SEC(".maps");

/* Hand the packet to the next NF of the chain; XDP_PASS when there is none. */
static __always_inline int chain_pass(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &chain_next, 0);
	return XDP_PASS;
}

#endif /* INNET_CHAIN_H */
