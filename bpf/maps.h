/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Maps shared by every capture mode. Sizes are set from Go before loading. */
#ifndef PKTSTAT_MAPS_H
#define PKTSTAT_MAPS_H

#include "flow.h"
#include "appproto.h"

/* Packets that found the flow table full, per interface and direction. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct overflow_key);
	__type(value, struct flow_counters);
} flows_overflow SEC(".maps");

/* Last resort when even flows_overflow is full: one total, so nothing is lost. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_counters);
} flows_overflow_total SEC(".maps");

/*
 * Counters are per CPU, so plain increments are enough: a program runs with
 * migration disabled and no other CPU writes this CPU's copy.
 */
static __always_inline void bump(struct flow_counters *c, __u64 len)
{
	c->packets++;
	c->bytes += len;
}

/*
 * count_iface adds one packet to the (ifindex, direction) entry of a per-CPU
 * hash keyed by struct overflow_key, creating it if needed. It returns
 * non-zero when the table is full and the packet was not counted.
 */
static __always_inline int count_iface(void *map, __u32 ifindex, __u8 direction, __u64 len)
{
	struct overflow_key okey = { .ifindex = ifindex, .direction = direction };
	struct flow_counters *c = bpf_map_lookup_elem(map, &okey);
	if (c) {
		bump(c, len);
		return 0;
	}
	struct flow_counters init = { .packets = 1, .bytes = len, .first_seen_ns = bpf_ktime_get_ns() };
	long err = bpf_map_update_elem(map, &okey, &init, BPF_NOEXIST);
	if (!err)
		return 0;
	if (err == -EEXIST) {
		c = bpf_map_lookup_elem(map, &okey);
		if (c) {
			bump(c, len);
			return 0;
		}
	}
	return 1;
}

static __always_inline void count_overflow(__u32 ifindex, __u8 direction, __u64 len)
{
	if (!count_iface(&flows_overflow, ifindex, direction, len))
		return;
	__u32 zero = 0;
	struct flow_counters *c = bpf_map_lookup_elem(&flows_overflow_total, &zero);
	if (c) {
		if (!c->first_seen_ns)
			c->first_seen_ns = bpf_ktime_get_ns();
		bump(c, len);
	}
}

/*
 * count_flow adds one packet to key's entry in map, creating it if needed,
 * and lets an undecided flow look at this packet's payload (fk is the flow
 * part of key, pc the parse cursor). A full table never drops a packet from
 * the totals: it goes to overflow.
 */
static __always_inline void count_flow(void *map, const void *key, const struct flow_key *fk,
				       const struct cursor *pc, __u64 len)
{
	struct flow_counters *c = bpf_map_lookup_elem(map, key);
	if (c) {
		bump(c, len);
		if (c->app_proto == APP_UNDECIDED)
			app_update(c, pc, fk);
		return;
	}
	struct flow_counters init = { .packets = 1, .bytes = len, .first_seen_ns = bpf_ktime_get_ns() };
	app_update(&init, pc, fk);
	long err = bpf_map_update_elem(map, key, &init, BPF_NOEXIST);
	if (!err)
		return;
	if (err == -EEXIST) {
		/* Another CPU created it between our lookup and update. */
		c = bpf_map_lookup_elem(map, key);
		if (c) {
			bump(c, len);
			return;
		}
	}
	count_overflow(fk->ifindex, fk->direction, len);
}

#endif /* PKTSTAT_MAPS_H */
