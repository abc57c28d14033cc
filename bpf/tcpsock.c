// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//go:build ignore

/*
 * TCP socket events for the tc and cgroup modes, which see packets but not
 * the socket's own view of them (kprobe mode has its own retransmit hook):
 *
 *   tp_btf/tcp_retransmit_skb  retransmitted skbs and their payload bytes
 *                              (skb->len of the skb the retransmit queue
 *                              sent again: TCP payload, no headers; a
 *                              TSO skb of several segments counts once).
 *                              Since 6.x the tracepoint has an err
 *                              argument and fires for failed attempts
 *                              too: only err == 0 counts (tcp_retransmit_err),
 *                              as before it fired only then (tcp_retransmit).
 *                              Tail loss probes go through the same
 *                              function and count.
 *   tp_btf/tcp_probe           the smoothed RTT (srtt_us >> 3) each time an
 *                              established socket receives a segment:
 *                              samples, sum, min, max and a histogram per
 *                              flow. Loaded only with tcp_rtt = true.
 *
 * Keys are the socket's ends as an egress flow (local -> remote; IPv4 over
 * a dual-stack socket as IPv4), ifindex the device of the socket's cached
 * route (sk_dst_cache->dev, 0 when it has none), cgroup_id the socket's
 * cgroup; pid and comm are 0: these run in softirqs and timers. User space
 * joins them to the egress flow records of the same ends.
 */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "errno.h"
#include "flow.h"
#include "sock.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/*
 * Only sockets of this network namespace (the inode of its nsfs file) are
 * counted, 0 for any: tc mode watches interfaces of one namespace, and a
 * socket elsewhere is not its traffic. Set before loading.
 */
const volatile __u32 want_netns = 0;

/*
 * Retransmissions per flow: packets = skbs, bytes = their payload. One
 * value per flow shared by the CPUs, as the flow tables (maps.h,
 * bump_shared): a per-CPU table of max_flows entries would cost
 * max_flows * 48 bytes per possible CPU for events this rare.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct cgroup_flow_key);
	__type(value, struct flow_counters);
} tcp_retransmits SEC(".maps");

/* Retransmissions that found tcp_retransmits full, in one total. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_counters);
} tcp_retransmits_overflow SEC(".maps");

#define RTT_BUCKETS 16

/*
 * Upper bounds (inclusive, microseconds) of the first RTT_BUCKETS - 1
 * histogram buckets; the last has none. User space sets them before
 * loading (core.RTTBucketBounds), so both sides use one list.
 */
const volatile __u32 rtt_bounds_us[RTT_BUCKETS - 1] = {};

/* Smoothed RTT samples of one flow since user space last took them. */
struct rtt_stats {
	__u64 samples;
	__u64 sum_us;
	__u32 min_us;
	__u32 max_us;
	__u32 buckets[RTT_BUCKETS]; /* samples per rtt_bounds_us bucket */
};

/*
 * Taken (looked up and deleted) by user space at every Read, so it holds
 * only the flows with samples in one interval: not preallocated, since a
 * full table would cost max_flows * 88 bytes per CPU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, struct cgroup_flow_key);
	__type(value, struct rtt_stats);
} tcp_rtt SEC(".maps");

/* Samples that found tcp_rtt full, together; reset by user space at every Read. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rtt_stats);
} tcp_rtt_overflow SEC(".maps");

static __always_inline int sock_flow(struct cgroup_flow_key *key, struct sock *sk)
{
	if (want_netns && BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != want_netns)
		return -1;
	__builtin_memset(key, 0, sizeof(*key));
	struct ends e = {};
	sock_ends(&e, sk);
	keyed(key, &e, IPPROTO_TCP, FLOW_EGRESS);
	key->flow.ifindex = BPF_CORE_READ(sk, sk_dst_cache, dev, ifindex);
	key->cgroup_id = sock_cgroup(sk);
	return 0;
}

static __always_inline void retransmitted(struct sock *sk, struct sk_buff *skb)
{
	struct cgroup_flow_key key;
	if (sock_flow(&key, sk))
		return;
	__u64 bytes = BPF_CORE_READ(skb, len);
	struct flow_counters *c = bpf_map_lookup_elem(&tcp_retransmits, &key);
	if (!c) {
		struct flow_counters init = { .packets = 1, .bytes = bytes, .first_seen_ns = bpf_ktime_get_ns() };
		long err = bpf_map_update_elem(&tcp_retransmits, &key, &init, BPF_NOEXIST);
		if (!err)
			return;
		/* -EEXIST: another CPU created it between our lookup and update. */
		if (err == -EEXIST)
			c = bpf_map_lookup_elem(&tcp_retransmits, &key);
		if (!c) {
			__u32 zero = 0;
			c = bpf_map_lookup_elem(&tcp_retransmits_overflow, &zero);
			if (!c)
				return;
			if (!c->first_seen_ns)
				c->first_seen_ns = bpf_ktime_get_ns();
		}
	}
	/* Atomic for the shared table; the per-CPU overflow total needs none, but it is as rare. */
	__sync_fetch_and_add(&c->packets, 1);
	__sync_fetch_and_add(&c->bytes, bytes);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit, struct sock *sk, struct sk_buff *skb)
{
	retransmitted(sk, skb);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_err, struct sock *sk, struct sk_buff *skb, int err)
{
	if (err == 0)
		retransmitted(sk, skb);
	return 0;
}

/* Per-CPU values of an entry another CPU created start all zero. */
static __always_inline void rtt_add(struct rtt_stats *s, __u32 us)
{
	if (s->samples == 0 || us < s->min_us)
		s->min_us = us;
	if (us > s->max_us)
		s->max_us = us;
	s->samples++;
	s->sum_us += us;
	__u32 b = 0;
	for (int i = 0; i < RTT_BUCKETS - 1; i++)
		if (us > rtt_bounds_us[i])
			b = i + 1;
	if (b < RTT_BUCKETS)
		s->buckets[b]++;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_probe_rtt, struct sock *sk, struct sk_buff *skb)
{
	__u32 srtt = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	if (!srtt)
		return 0; /* no RTT measured yet */
	struct cgroup_flow_key key;
	if (sock_flow(&key, sk))
		return 0;
	struct rtt_stats *s = bpf_map_lookup_elem(&tcp_rtt, &key);
	if (!s) {
		struct rtt_stats init = {};
		rtt_add(&init, srtt);
		long err = bpf_map_update_elem(&tcp_rtt, &key, &init, BPF_NOEXIST);
		if (!err)
			return 0;
		if (err == -EEXIST)
			s = bpf_map_lookup_elem(&tcp_rtt, &key);
		if (!s) {
			__u32 zero = 0;
			s = bpf_map_lookup_elem(&tcp_rtt_overflow, &zero);
			if (!s)
				return 0;
		}
	}
	rtt_add(s, srtt);
	return 0;
}
