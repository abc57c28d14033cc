// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//go:build ignore

/*
 * The drain's reader of the flow tables on kernels with
 * bpf_for_each_map_elem (5.13): user space runs walk_flows (tc and xdp
 * modes) or walk_cgroup_flows (cgroup mode) once per drain with
 * BPF_PROG_TEST_RUN. It visits every entry of the table under RCU, without
 * the bucket locks BPF_MAP_LOOKUP_BATCH takes, and writes each entry's key
 * and counters to an mmapped array that user space then reads in place;
 * the return value is how many it wrote.
 *
 * The walk relies on nothing deleting or replacing entries while it runs:
 * the programs only ever insert (BPF_NOEXIST), and the drain deletes idle
 * entries only after its walk, so every entry is visited exactly once. The
 * tables here are the flow objects' own, given at load (MapReplacements);
 * max_entries of every map is set to max_flows then.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "flow.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct cgroup_flow_key);
	__type(value, struct flow_counters);
} cgroup_flows SEC(".maps");

struct flow_rec {
	struct flow_key key;
	struct flow_counters val;
};

struct cgroup_flow_rec {
	struct cgroup_flow_key key;
	struct flow_counters val;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct flow_rec);
} flows_walked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct cgroup_flow_rec);
} cgroup_flows_walked SEC(".maps");

/* Entries are copied 8 bytes at a time: a counter is never read torn. */
static long walk_flow(void *map, struct flow_key *k, struct flow_counters *v, __u32 *n)
{
	struct flow_rec *r = bpf_map_lookup_elem(&flows_walked, n);

	if (!r)
		return 1; /* more entries than max_flows: cannot happen */
	__builtin_memcpy(&r->key, k, sizeof(r->key));
	__builtin_memcpy(&r->val, v, sizeof(r->val));
	(*n)++;
	return 0;
}

SEC("tc")
int walk_flows(struct __sk_buff *skb)
{
	__u32 n = 0;

	bpf_for_each_map_elem(&flows, walk_flow, &n, 0);
	return n;
}

static long walk_cgroup_flow(void *map, struct cgroup_flow_key *k, struct flow_counters *v, __u32 *n)
{
	struct cgroup_flow_rec *r = bpf_map_lookup_elem(&cgroup_flows_walked, n);

	if (!r)
		return 1;
	__builtin_memcpy(&r->key, k, sizeof(r->key));
	__builtin_memcpy(&r->val, v, sizeof(r->val));
	(*n)++;
	return 0;
}

SEC("tc")
int walk_cgroup_flows(struct __sk_buff *skb)
{
	__u32 n = 0;

	bpf_for_each_map_elem(&cgroup_flows, walk_cgroup_flow, &n, 0);
	return n;
}
