/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Maps shared by every capture mode. Sizes are set from Go before loading. */
#ifndef PKTSTAT_MAPS_H
#define PKTSTAT_MAPS_H

#include "flow.h"
#include "appproto.h"

/*
 * Packets that found the flow table full, per interface and direction. Per
 * CPU, so that a flood's packets, which all land here, take no atomic on a
 * shared line; not preallocated, so that it costs memory (48 bytes per
 * possible CPU an entry) only for the interfaces that overflow, instead of
 * 4,096 entries' worth (12 MiB on a 64-CPU host) from the start. An entry
 * that cannot be allocated goes to flows_overflow_total.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
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
 * The overflow counters are per CPU, so plain increments are enough: a
 * program runs with migration disabled and no other CPU writes this CPU's
 * copy.
 */
static __always_inline void bump(struct flow_counters *c, __u64 len)
{
	c->packets++;
	c->bytes += len;
}

/*
 * The flow tables (flows, cgroup_flows, kprobe_flows, the retransmit tables)
 * hold one value per flow that every CPU adds to, not one per possible CPU:
 * a preallocated per-CPU table costs max_flows * 48 bytes of kernel memory
 * per possible CPU (384 MiB at 131,072 flows on a 64-CPU host, charged to
 * the agent's memory cgroup), a shared one 48 bytes per flow whatever the
 * CPU count. Its counters take atomic adds: bench/profile measured them
 * equal to the per-CPU table's plain ones (parse_shared against parse_hash),
 * but the bench's A/B of tc_ingress on another machine put them at +8 to
 * +17 ns a packet (bench/README.md, "Fourth pass"). Packets of one flow
 * seldom meet on two CPUs at once.
 */
static __always_inline void bump_shared(struct flow_counters *c, __u64 len)
{
	__sync_fetch_and_add(&c->packets, 1);
	__sync_fetch_and_add(&c->bytes, len);
}

/* TCP header flag bits (byte 13 of the header). */
#define TCPF_FIN_ 0x01
#define TCPF_SYN_ 0x02
#define TCPF_RST_ 0x04
#define TCPF_ACK_ 0x10

/*
 * tcp_flags returns the flags byte of the packet's TCP header, or 0 when the
 * packet is not TCP or its header is too short to hold it (a truncated
 * header counts no flags rather than guessing).
 */
static __always_inline __u8 tcp_flags(const struct cursor *pc, const struct flow_key *fk)
{
	__u8 *l4 = pc->l4;
	if (!l4 || fk->ip_proto != IPPROTO_TCP_)
		return 0;
	if (l4 + 14 > (__u8 *)pc->end || (pc->limit && l4 + 14 > (__u8 *)pc->limit))
		return 0;
	return l4[13];
}

/*
 * bump_tcp counts the packet's SYN, SYN+ACK, FIN and RST. Most packets of a
 * connection carry none of the three, so they pay one test and no stores.
 */
static __always_inline void bump_tcp(struct flow_counters *c, __u8 tf)
{
	if (!(tf & (TCPF_FIN_ | TCPF_SYN_ | TCPF_RST_)))
		return;
	if (tf & TCPF_SYN_) {
		if (tf & TCPF_ACK_)
			c->tcp_synack++;
		else
			c->tcp_syn++;
	}
	if (tf & TCPF_FIN_)
		c->tcp_fin++;
	if (tf & TCPF_RST_)
		c->tcp_rst++;
}

/* bump_tcp_shared is bump_tcp for a value every CPU adds to. */
static __always_inline void bump_tcp_shared(struct flow_counters *c, __u8 tf)
{
	if (!(tf & (TCPF_FIN_ | TCPF_SYN_ | TCPF_RST_)))
		return;
	if (tf & TCPF_SYN_) {
		if (tf & TCPF_ACK_)
			__sync_fetch_and_add(&c->tcp_synack, 1);
		else
			__sync_fetch_and_add(&c->tcp_syn, 1);
	}
	if (tf & TCPF_FIN_)
		__sync_fetch_and_add(&c->tcp_fin, 1);
	if (tf & TCPF_RST_)
		__sync_fetch_and_add(&c->tcp_rst, 1);
}

/*
 * count_iface adds one packet to the (ifindex, direction) entry of a per-CPU
 * hash keyed by struct overflow_key, creating it if needed. It returns
 * non-zero when the table is full and the packet was not counted.
 */
static __always_inline int count_iface(void *map, __u32 ifindex, __u8 direction, __u64 len, __u8 tf)
{
	struct overflow_key okey = { .ifindex = ifindex, .direction = direction };
	struct flow_counters *c = bpf_map_lookup_elem(map, &okey);
	if (c) {
		bump(c, len);
		bump_tcp(c, tf);
		return 0;
	}
	struct flow_counters init = { .packets = 1, .bytes = len, .first_seen_ns = bpf_ktime_get_ns() };
	bump_tcp(&init, tf);
	long err = bpf_map_update_elem(map, &okey, &init, BPF_NOEXIST);
	if (!err)
		return 0;
	if (err == -EEXIST) {
		c = bpf_map_lookup_elem(map, &okey);
		if (c) {
			bump(c, len);
			bump_tcp(c, tf);
			return 0;
		}
	}
	return 1;
}

static __always_inline void count_overflow(__u32 ifindex, __u8 direction, __u64 len, __u8 tf)
{
	if (!count_iface(&flows_overflow, ifindex, direction, len, tf))
		return;
	__u32 zero = 0;
	struct flow_counters *c = bpf_map_lookup_elem(&flows_overflow_total, &zero);
	if (c) {
		if (!c->first_seen_ns)
			c->first_seen_ns = bpf_ktime_get_ns();
		bump(c, len);
		bump_tcp(c, tf);
	}
}

/*
 * count_flow adds one packet to key's entry in map (a shared flow table),
 * creating it if needed, and lets an undecided flow look at this packet's
 * payload (fk is the flow part of key, pc the parse cursor). A full table
 * never drops a packet from the totals: it goes to overflow. Two CPUs may
 * inspect one flow's payload at once; the protocol is then decided by
 * whichever writes last, from that flow's own payload either way.
 */
static __always_inline void count_flow(void *map, const void *key, const struct flow_key *fk,
				       const struct cursor *pc, __u64 len)
{
	__u8 tf = tcp_flags(pc, fk);
	struct flow_counters *c = bpf_map_lookup_elem(map, key);
	if (c) {
		bump_shared(c, len);
		bump_tcp_shared(c, tf);
		if (c->app_proto == APP_UNDECIDED)
			app_update(c, pc, fk);
		return;
	}
	struct flow_counters init = { .packets = 1, .bytes = len, .first_seen_ns = bpf_ktime_get_ns() };
	bump_tcp(&init, tf);
	app_update(&init, pc, fk);
	long err = bpf_map_update_elem(map, key, &init, BPF_NOEXIST);
	if (!err)
		return;
	if (err == -EEXIST) {
		/* Another CPU created it between our lookup and update. */
		c = bpf_map_lookup_elem(map, key);
		if (c) {
			bump_shared(c, len);
			bump_tcp_shared(c, tf);
			return;
		}
	}
	count_overflow(fk->ifindex, fk->direction, len, tf);
}

#endif /* PKTSTAT_MAPS_H */
