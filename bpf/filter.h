/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Include/exclude filters, checked after parsing and before the flow-table
 * lookup. A filtered-out packet is neither dropped from the network nor from
 * the accounting: it is added to its interface and direction's filtered total.
 * User space compiles the config keys into the maps below and sets
 * filter_enabled before loading; with no keys the check is dead code that the
 * verifier removes.
 */
#ifndef PKTSTAT_FILTER_H
#define PKTSTAT_FILTER_H

#include "flow.h"
#include "parse.h"
#include "maps.h"

/* Bits of filter_enabled: which kinds of filter have keys. */
#define FILTER_CIDRS (1 << 0)
#define FILTER_PROTOS (1 << 1)
#define FILTER_PORTS (1 << 2)

/* Bits of a CIDR or port entry: the address or port is in an include or exclude key. */
#define FILTER_IN (1 << 0)
#define FILTER_OUT (1 << 1)

/* Indexes past the 256 IP protocols in struct proto_verdicts. */
#define FILTER_PROTO_ARP 256
#define FILTER_PROTO_OTHER 257

/* Set from user space before loading (spec.Variables): the kinds with any key, with include keys, with exclude keys. */
const volatile __u32 filter_enabled = 0;
const volatile __u32 filter_has_in = 0;
const volatile __u32 filter_has_out = 0;

/* An address for the CIDR trie: family (4 or 6) first, so IPv4 and IPv6 never match each other. */
struct filter_cidr_key {
	__u32 prefixlen; /* 8 (the family byte) + the CIDR's prefix length */
	__u8 family;
	__u8 addr[16];
	__u8 _pad[3];
};

/* Verdict per protocol, include and exclude already combined: 1 keeps, 0 filters out. */
struct proto_verdicts {
	__u8 keep[264]; /* IP protocol number, FILTER_PROTO_ARP, FILTER_PROTO_OTHER */
};

/* One bit per port for include_ports, one for exclude_ports. */
struct port_bitmaps {
	__u64 in[1024];
	__u64 out[1024];
};

/* include_cidrs and exclude_cidrs; each value holds the FILTER_IN/OUT bits of its prefix and every shorter one that contains it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct filter_cidr_key);
	__type(value, __u8);
} filter_cidrs SEC(".maps");

/* include_protocols and exclude_protocols as one verdict table (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proto_verdicts);
} filter_protos SEC(".maps");

/* include_ports and exclude_ports as two bitmaps (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_bitmaps);
} filter_ports SEC(".maps");

/*
 * Packets the filters left out, per interface and direction; per CPU and
 * not preallocated, as flows_overflow (maps.h).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct overflow_key);
	__type(value, struct flow_counters);
} flows_filtered SEC(".maps");

/* cidr_bits returns the FILTER_IN/OUT bits of the longest prefix that holds addr (4 or 16 bytes). */
static __always_inline __u8 cidr_bits(const __u8 *addr, int v6)
{
	struct filter_cidr_key k = {};
	if (v6) {
		k.prefixlen = 8 + 128;
		k.family = 6;
		__builtin_memcpy(k.addr, addr, 16);
	} else {
		k.prefixlen = 8 + 32;
		k.family = 4;
		__builtin_memcpy(k.addr, addr, 4);
	}
	__u8 *v = bpf_map_lookup_elem(&filter_cidrs, &k);
	return v ? *v : 0;
}

static __always_inline __u8 port_bits(const struct port_bitmaps *fp, __u16 port)
{
	__u32 word = (port >> 6) & 1023;
	__u64 bit = 1ULL << (port & 63);
	__u8 b = 0;
	if (fp->in[word] & bit)
		b |= FILTER_IN;
	if (fp->out[word] & bit)
		b |= FILTER_OUT;
	return b;
}

/*
 * keep applies one kind of filter to the bits of a packet's two addresses or
 * ports: either one in an exclude key filters the packet out, and when there
 * are include keys (has_in) one of them must hold it.
 */
static __always_inline int keep(__u8 bits, int has_in)
{
	if (bits & FILTER_OUT)
		return 0;
	return !has_in || (bits & FILTER_IN);
}

/* filtered_out says whether k's packet is left out by the filters. */
static __always_inline int filtered_out(const struct flow_key *k)
{
	int ip = k->eth_proto == ETH_P_IP_ || k->eth_proto == ETH_P_IPV6_;

	if (filter_enabled & FILTER_PROTOS) {
		__u32 zero = 0;
		struct proto_verdicts *fp = bpf_map_lookup_elem(&filter_protos, &zero);
		if (fp) {
			__u32 i = k->ip_proto;
			if (!ip)
				i = k->eth_proto == ETH_P_ARP_ ? FILTER_PROTO_ARP : FILTER_PROTO_OTHER;
			if (i < sizeof(fp->keep) && !fp->keep[i])
				return 1;
		}
	}
	if (filter_enabled & FILTER_PORTS) {
		/* Only tcp, udp, udplite and sctp have ports; a later fragment has none. */
		int ports = ip && !(k->flags & FLOW_F_FRAGMENT) &&
			    (k->ip_proto == IPPROTO_TCP_ || k->ip_proto == IPPROTO_UDP_ ||
			     k->ip_proto == IPPROTO_UDPLITE_ || k->ip_proto == IPPROTO_SCTP_);
		__u8 bits = 0;
		if (ports) {
			__u32 zero = 0;
			struct port_bitmaps *fp = bpf_map_lookup_elem(&filter_ports, &zero);
			if (fp)
				bits = port_bits(fp, k->src_port) | port_bits(fp, k->dst_port);
		}
		if (!keep(bits, filter_has_in & FILTER_PORTS))
			return 1;
	}
	if (filter_enabled & FILTER_CIDRS) {
		/* ARP's IPv4 sender and target count as its addresses, as in the src_ip and dst_ip tags. */
		int v6 = k->eth_proto == ETH_P_IPV6_;
		int addrs = v6 || k->eth_proto == ETH_P_IP_ || k->eth_proto == ETH_P_ARP_;
		__u8 bits = 0;
		if (addrs) {
			bits = cidr_bits(k->src_addr, v6);
			/* The second lookup only when it can change the verdict. */
			if (!(bits & FILTER_OUT) && (!(bits & FILTER_IN) || (filter_has_out & FILTER_CIDRS)))
				bits |= cidr_bits(k->dst_addr, v6);
		}
		if (!keep(bits, filter_has_in & FILTER_CIDRS))
			return 1;
	}
	return 0;
}

/*
 * filter_packet counts k's packet in the filtered total of its interface and
 * direction if the filters leave it out, and says whether they did. It is a
 * function of its own, called only when filter_enabled is set: inlined, it
 * would change how the compiler lays out the parser even when the verifier
 * removes the call as dead code, and "no filter keys" would cost something.
 */
static __noinline int filter_packet(const struct flow_key *k, __u64 len)
{
	if (!filtered_out(k))
		return 0;
	/*
	 * A full table (thousands of interfaces) falls back to the overflow
	 * series: nothing is lost. A filtered total stands for many flows, so
	 * it counts packets and bytes only, no TCP flags.
	 */
	if (count_iface(&flows_filtered, k->ifindex, k->direction, len, 0))
		count_overflow(k->ifindex, k->direction, len, 0);
	return 1;
}

#endif /* PKTSTAT_FILTER_H */
