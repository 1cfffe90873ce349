// SPDX-License-Identifier: GPL-2.0
/* trafficgen: a packet generator (trafficgen) and a sink (sink), for benchmarks.
 *
 * Run with BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES): each
 * repetition redirects the frame to config.ifindex (an ifindex in the caller's
 * namespace), so the kernel transmits it for real, at the rate of a loop in the kernel.
 *
 * Live mode recycles its pages without copying the frame in again, and whoever receives
 * a frame may rewrite it in place (a router decrements the TTL and rewrites the MACs):
 * the first HEAD_LEN bytes, every header of a small frame, are restored from
 * config.head on every run, so each frame leaves exactly as the caller built it.
 *
 * sink: the other end. Counts the frames an interface receives and drops them in XDP,
 * so a forwarding benchmark measures the path up to the receiver, not the receiver's
 * network stack.
 */
#include "include/parsing.h"

#define HEAD_LEN 64

struct trafficgen_config {
	__u32 ifindex;
	__u32 reserved;
	__u8 head[HEAD_LEN]; /* the frame's first HEAD_LEN bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct trafficgen_config);
	__uint(max_entries, 1);
} config SEC(".maps");

SEC("xdp")
int trafficgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct trafficgen_config *cfg;
	__u32 key = 0;

	cfg = bpf_map_lookup_elem(&config, &key);
	if (!cfg || !cfg->ifindex || data + HEAD_LEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, cfg->head, HEAD_LEN);
	return bpf_redirect(cfg->ifindex, 0);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} sink_packets SEC(".maps");

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *count = bpf_map_lookup_elem(&sink_packets, &key);

	if (count)
		*count += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
