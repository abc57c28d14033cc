// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//go:build ignore

/*
 * Packets the kernel dropped, per flow and drop reason, from the kfree_skb
 * tracepoint (loaded only with `drops = true`). The packet is read from the
 * skb's network header, so bytes are L3 lengths.
 *
 * parse.h reads through packet pointers, which the verifier bounds by
 * comparing them with data_end; a tracing program has no packet pointers,
 * only the skb, so the same parse is done here with bpf_probe_read_kernel at
 * offsets from the network header. The fields and the truncated/fragment
 * rules are parse.h's (IPv4, IPv6 with extension headers, ARP, and every
 * transport parse_l4 knows); the differences: there is no Ethernet header to
 * read (the EtherType is skb->protocol, the VLAN id skb->vlan_tci), and
 * headers outside the skb's linear area are not pulled but mark the key
 * truncated.
 */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "errno.h"
#include "flow.h"
/* filter.h's and maps.h's helpers for the packet hooks are unused here. */
#pragma clang diagnostic ignored "-Wunused-function"
#include "parse.h"
#include "filter.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* A drop: the flow as the TC program keys it, plus the kernel's reason. */
struct drop_key {
	struct flow_key flow;
	__u32 reason; /* enum skb_drop_reason of the running kernel */
	__u32 _pad;
};

/* Drops per flow and reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct drop_key);
	__type(value, struct flow_counters);
} drops SEC(".maps");

/* Drops of flows that found the drop table full, per interface, direction and reason (only those key fields set). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, struct flow_counters);
} drops_overflow SEC(".maps");

/* Last resort when even drops_overflow is full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_counters);
} drops_overflow_total SEC(".maps");

/* Drops of packets the filters leave out, per interface, direction and reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, struct flow_counters);
} drops_filtered SEC(".maps");

/* The watched interfaces (ifindex -> 1), kept by user space as interfaces come and go. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} drop_ifaces SEC(".maps");

/*
 * Set from the running kernel's BTF before loading: the reasons of normal
 * frees, which are not drops. Their numbers differ between kernels.
 */
const volatile __u32 reason_consumed = 0xffffffff;
const volatile __u32 reason_not_dropped_yet = 0xffffffff;
/* Inode of the watched network namespace: an ifindex means something only inside its own. */
const volatile __u32 netns_ino = 0;

#define DIRECTION_UNKNOWN 2

/* An offset cursor from the network header: pos, end and limit count bytes from base. */
struct pcur {
	const unsigned char *base;
	__u32 pos;
	__u32 end;   /* end of the linear data */
	__u32 limit; /* end of the IP packet, if shorter; 0 if none */
};

static __always_inline int pshort(const struct pcur *c, __u32 n)
{
	return c->pos + n > c->end || (c->limit && c->pos + n > c->limit);
}

/* pread copies n bytes at the cursor if they are there; non-zero if not. */
static __always_inline int pread(const struct pcur *c, void *dst, __u32 n)
{
	if (pshort(c, n))
		return 1;
	return bpf_probe_read_kernel(dst, n, c->base + c->pos) != 0;
}

static __always_inline void plimit(struct pcur *c, __u32 start, __u32 len)
{
	__u32 limit = start + len;
	if (limit < c->end)
		c->limit = limit;
}

static __always_inline void pparse_l4(struct pcur *c, struct flow_key *k)
{
	__u8 p[8];

	switch (k->ip_proto) {
	case IPPROTO_TCP_:
	case IPPROTO_UDP_:
	case IPPROTO_UDPLITE_:
	case IPPROTO_SCTP_:
	case IPPROTO_GRE_:
	case IPPROTO_ESP_:
		if (pread(c, p, 4))
			goto truncated;
		k->src_port = (__u16)p[0] << 8 | p[1];
		k->dst_port = (__u16)p[2] << 8 | p[3];
		return;
	case IPPROTO_ICMP_:
	case IPPROTO_ICMPV6_:
	case IPPROTO_OSPF_:
		if (pread(c, p, 2))
			goto truncated;
		k->src_port = p[0];
		k->dst_port = p[1];
		return;
	case IPPROTO_AH_:
		if (pread(c, p, 8))
			goto truncated;
		k->src_port = (__u16)p[4] << 8 | p[5];
		k->dst_port = (__u16)p[6] << 8 | p[7];
		return;
	}
	return;
truncated:
	k->flags |= FLOW_F_TRUNCATED;
}

static __always_inline void pparse_ipv4(struct pcur *c, struct flow_key *k)
{
	struct iphdr ip;

	if (pread(c, &ip, sizeof(ip)) || ip.version != 4) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	if (ip.tot_len)
		plimit(c, c->pos, bpf_ntohs(ip.tot_len));
	*(__u32 *)k->src_addr = ip.saddr;
	*(__u32 *)k->dst_addr = ip.daddr;
	k->ip_proto = ip.protocol;
	if (ip.frag_off & bpf_htons(0x1fff))
		k->flags |= FLOW_F_FRAGMENT;
	if (ip.ihl < 5 || pshort(c, ip.ihl * 4)) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	if (k->flags & FLOW_F_FRAGMENT)
		return;
	c->pos += ip.ihl * 4;
	pparse_l4(c, k);
}

static __always_inline void pparse_ipv6(struct pcur *c, struct flow_key *k)
{
	struct ipv6hdr ip6;

	if (pread(c, &ip6, sizeof(ip6)) || ip6.version != 6) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	__builtin_memcpy(k->src_addr, &ip6.saddr, 16);
	__builtin_memcpy(k->dst_addr, &ip6.daddr, 16);
	__u8 nexthdr = ip6.nexthdr;
	c->pos += sizeof(ip6);
	if (ip6.payload_len)
		plimit(c, c->pos, bpf_ntohs(ip6.payload_len));

	for (int i = 0; i < MAX_IPV6_EXT_HDRS && ipv6_ext_hdr(nexthdr); i++) {
		if (nexthdr == IPPROTO_FRAGMENT_) {
			struct ipv6_frag fh;
			if (pread(c, &fh, sizeof(fh))) {
				k->ip_proto = nexthdr;
				k->flags |= FLOW_F_TRUNCATED;
				return;
			}
			nexthdr = fh.nexthdr;
			c->pos += sizeof(fh);
			if (fh.frag_off & bpf_htons(0xfff8)) {
				k->ip_proto = nexthdr;
				k->flags |= FLOW_F_FRAGMENT;
				return;
			}
			continue;
		}
		struct ipv6_ext ext;
		if (pread(c, &ext, sizeof(ext)) || pshort(c, (ext.hdrlen + 1) * 8)) {
			k->ip_proto = nexthdr;
			k->flags |= FLOW_F_TRUNCATED;
			return;
		}
		nexthdr = ext.nexthdr;
		c->pos += (ext.hdrlen + 1) * 8;
	}
	k->ip_proto = nexthdr;
	if (ipv6_ext_hdr(nexthdr)) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	pparse_l4(c, k);
}

static __always_inline void pparse_arp(struct pcur *c, struct flow_key *k)
{
	struct arp_ipv4 arp;

	if (pread(c, &arp, 8)) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	k->dst_port = bpf_ntohs(arp.op);
	if (arp.pro != bpf_htons(ETH_P_IP_) || arp.hln != 6 || arp.pln != 4)
		return;
	if (pread(c, &arp, sizeof(arp))) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	__builtin_memcpy(k->src_addr, arp.spa, 4);
	__builtin_memcpy(k->dst_addr, arp.tpa, 4);
}

/* add counts one packet in key's entry of map; non-zero if the table is full. */
static __always_inline int add(void *map, const struct drop_key *key, __u64 len)
{
	struct flow_counters *c = bpf_map_lookup_elem(map, key);
	if (c) {
		/* Per-CPU values: no other CPU writes this copy, no atomics needed. */
		c->packets++;
		c->bytes += len;
		return 0;
	}
	struct flow_counters init = { .packets = 1, .bytes = len, .first_seen_ns = bpf_ktime_get_ns() };
	long err = bpf_map_update_elem(map, key, &init, BPF_NOEXIST);
	if (!err)
		return 0;
	if (err == -EEXIST) {
		c = bpf_map_lookup_elem(map, key);
		if (c) {
			c->packets++;
			c->bytes += len;
			return 0;
		}
	}
	return 1;
}

/* count adds a drop to map, else to its overflow entry, else to the total: a full table loses none. */
static __always_inline void count(void *map, const struct drop_key *key, __u64 len)
{
	if (add(map, key, len)) {
		struct drop_key ov = { .reason = key->reason };
		ov.flow.ifindex = key->flow.ifindex;
		ov.flow.direction = key->flow.direction;
		if (!add(&drops_overflow, &ov, len))
			return;
		__u32 zero = 0;
		struct flow_counters *c = bpf_map_lookup_elem(&drops_overflow_total, &zero);
		if (c) {
			if (!c->first_seen_ns)
				c->first_seen_ns = bpf_ktime_get_ns();
			c->packets++;
			c->bytes += len;
		}
	}
}

/*
 * Direction from where the skb is: it reached the stack from this device
 * (skb_iif is set by the receive path), or is a received frame the stack has
 * not seen yet (its Ethernet header already pulled: data past the MAC
 * header); a skb that never came in on any device was sent by this host.
 * One that came in on another device and is now on this one (forwarded)
 * could be on its way in or out: unknown.
 */
static __always_inline __u8 drop_direction(struct sk_buff *skb, __u32 ifindex)
{
	__u32 iif = skb->skb_iif;
	if (iif == ifindex)
		return FLOW_INGRESS;
	if (iif != 0)
		return DIRECTION_UNKNOWN;
	__u16 mac = skb->mac_header;
	if (mac != (__u16)~0U && skb->data > skb->head + mac)
		return FLOW_INGRESS;
	return FLOW_EGRESS;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	if (reason == reason_consumed || reason == reason_not_dropped_yet)
		return 0;
	/* Drops on no device (some socket-level ones) cannot be told apart from other namespaces' and interfaces': left out. */
	struct net_device *dev = skb->dev;
	if (!dev)
		return 0;
	if (dev->nd_net.net->ns.inum != netns_ino)
		return 0;
	__u32 ifindex = dev->ifindex;
	if (!bpf_map_lookup_elem(&drop_ifaces, &ifindex))
		return 0;

	struct drop_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.reason = reason;
	key.flow.ifindex = ifindex;
	key.flow.direction = drop_direction(skb, ifindex);
	key.flow.eth_proto = bpf_ntohs(skb->protocol);
	key.flow.vlan_id = skb->vlan_tci & 0x0fff;

	unsigned char *head = skb->head;
	unsigned char *data = skb->data;
	__u16 nh = skb->network_header;
	__u32 tail = skb->tail;
	__u64 len = skb->len;
	if (nh == (__u16)~0U || tail < nh) {
		/* No network header yet (dropped before the stack set one). */
		key.flow.flags |= FLOW_F_TRUNCATED;
	} else {
		/* Bytes are the L3 length whether data points at the MAC, network or transport header. */
		len += data - (head + nh);
		struct pcur c = { .base = head + nh, .end = tail - nh };
		switch (key.flow.eth_proto) {
		case ETH_P_IP_:
			pparse_ipv4(&c, &key.flow);
			break;
		case ETH_P_IPV6_:
			pparse_ipv6(&c, &key.flow);
			break;
		case ETH_P_ARP_:
			pparse_arp(&c, &key.flow);
			break;
		}
	}
	if (filter_enabled && filtered_out(&key.flow)) {
		struct drop_key fk = { .reason = key.reason };
		fk.flow.ifindex = key.flow.ifindex;
		fk.flow.direction = key.flow.direction;
		count(&drops_filtered, &fk, len);
		return 0;
	}
	count(&drops, &key, len);
	return 0;
}
