/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Header parsers shared by every packet hook. Each one bounds-checks before
 * it reads, and on a short or malformed header marks the key truncated and
 * stops: the packet is still counted, with what was parsed so far.
 */
#ifndef PKTSTAT_PARSE_H
#define PKTSTAT_PARSE_H

#include "flow.h"

#define ETH_P_IP_ 0x0800
#define ETH_P_ARP_ 0x0806
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_IPV6_ 0x86DD

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_GRE_ 47
#define IPPROTO_ESP_ 50
#define IPPROTO_AH_ 51
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_DSTOPTS_ 60
#define IPPROTO_OSPF_ 89
#define IPPROTO_SCTP_ 132
#define IPPROTO_UDPLITE_ 136

/* IPv6 extension headers followed before giving up (the chain is then marked truncated). */
#define MAX_IPV6_EXT_HDRS 6
/* VLAN tags followed: 802.1ad outer plus 802.1Q inner. */
#define MAX_VLAN_TAGS 2

struct cursor {
	void *pos;
	void *end;   /* end of the packet data */
	void *limit; /* end of the IP packet, if shorter: Ethernet padding is not payload */
	void *l4;    /* start of a TCP or UDP header whose ports were read, for payload inspection */
};

struct vlan_tag {
	__be16 tci;
	__be16 encap_proto;
};

struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen; /* in 8-byte units, not counting the first 8 */
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in the top 13 bits */
	__be32 id;
};

struct arp_ipv4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
};

static __always_inline int too_short(const struct cursor *c, __u32 n)
{
	return c->pos + n > c->end || (c->limit && c->pos + n > c->limit);
}

/* set_limit ends the packet at len bytes from start when that is before its end. */
static __always_inline void set_limit(struct cursor *c, void *start, __u32 len)
{
	/*
	 * len comes from a byte swap, after which verifiers before about 6.3
	 * know nothing of its range. The compiler knows it is 16 bits and
	 * would drop a plain mask, so hide the value from it first: the mask
	 * then reaches the verifier and bounds the pointer arithmetic.
	 */
	asm volatile("" : "+r"(len));
	len &= 0xffff;
	void *limit = start + len;
	if (limit < c->end)
		c->limit = limit;
}

/* parse_l4 reads the identifiers of the transport (or port-less) protocol. */
static __always_inline void parse_l4(struct cursor *c, struct flow_key *k)
{
	__u8 *p = c->pos;

	switch (k->ip_proto) {
	case IPPROTO_TCP_:
	case IPPROTO_UDP_:
		if (too_short(c, 4))
			goto truncated;
		k->src_port = bpf_ntohs(*(__be16 *)p);
		k->dst_port = bpf_ntohs(*(__be16 *)(p + 2));
		c->l4 = p;
		return;
	case IPPROTO_UDPLITE_:
	case IPPROTO_SCTP_:
	case IPPROTO_GRE_: /* flags+version, then protocol: the same two 16-bit words */
	case IPPROTO_ESP_: /* SPI, split in two halves */
		if (too_short(c, 4))
			goto truncated;
		k->src_port = bpf_ntohs(*(__be16 *)p);
		k->dst_port = bpf_ntohs(*(__be16 *)(p + 2));
		return;
	case IPPROTO_ICMP_:
	case IPPROTO_ICMPV6_:
	case IPPROTO_OSPF_: /* version, type */
		if (too_short(c, 2))
			goto truncated;
		k->src_port = p[0];
		k->dst_port = p[1];
		return;
	case IPPROTO_AH_: /* SPI at offset 4 */
		if (too_short(c, 8))
			goto truncated;
		k->src_port = bpf_ntohs(*(__be16 *)(p + 4));
		k->dst_port = bpf_ntohs(*(__be16 *)(p + 6));
		return;
	}
	return;
truncated:
	k->flags |= FLOW_F_TRUNCATED;
}

static __always_inline void parse_ipv4(struct cursor *c, struct flow_key *k)
{
	struct iphdr *ip = c->pos;

	if (too_short(c, sizeof(*ip)) || ip->version != 4) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	/*
	 * A zero total length is a GSO packet's (BIG TCP, TSO): it runs to the
	 * end of the packet, as a zero IPv6 payload length does.
	 */
	if (ip->tot_len)
		set_limit(c, ip, bpf_ntohs(ip->tot_len));
	*(__u32 *)k->src_addr = ip->saddr;
	*(__u32 *)k->dst_addr = ip->daddr;
	k->ip_proto = ip->protocol;
	if (ip->frag_off & bpf_htons(0x1fff))
		k->flags |= FLOW_F_FRAGMENT;
	/* IHL below 5, or options past the total length or the packet. */
	if (ip->ihl < 5 || too_short(c, ip->ihl * 4)) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	/* Only the first fragment carries the transport header. */
	if (k->flags & FLOW_F_FRAGMENT)
		return;
	c->pos += ip->ihl * 4;
	parse_l4(c, k);
}

static __always_inline int ipv6_ext_hdr(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS_ || nexthdr == IPPROTO_ROUTING_ || nexthdr == IPPROTO_DSTOPTS_ ||
	       nexthdr == IPPROTO_FRAGMENT_;
}

static __always_inline void parse_ipv6(struct cursor *c, struct flow_key *k)
{
	struct ipv6hdr *ip6 = c->pos;

	if (too_short(c, sizeof(*ip6)) || ip6->version != 6) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	__builtin_memcpy(k->src_addr, &ip6->saddr, 16);
	__builtin_memcpy(k->dst_addr, &ip6->daddr, 16);
	__u8 nexthdr = ip6->nexthdr;
	/*
	 * A zero payload length is a jumbogram's or a GSO packet's: no limit
	 * then. The limit counts from the end of the fixed header: with the
	 * header added, a length above 65495 would overflow set_limit's 16 bits.
	 */
	if (ip6->payload_len)
		set_limit(c, ip6 + 1, bpf_ntohs(ip6->payload_len));
	c->pos += sizeof(*ip6);

	for (int i = 0; i < MAX_IPV6_EXT_HDRS && ipv6_ext_hdr(nexthdr); i++) {
		if (nexthdr == IPPROTO_FRAGMENT_) {
			struct ipv6_frag *fh = c->pos;
			if (too_short(c, sizeof(*fh))) {
				k->ip_proto = nexthdr;
				k->flags |= FLOW_F_TRUNCATED;
				return;
			}
			nexthdr = fh->nexthdr;
			c->pos += sizeof(*fh);
			if (fh->frag_off & bpf_htons(0xfff8)) {
				k->ip_proto = nexthdr;
				k->flags |= FLOW_F_FRAGMENT;
				return;
			}
			continue;
		}
		struct ipv6_ext *ext = c->pos;
		/* The whole header, as its length says: a short one ends the chain here. */
		if (too_short(c, sizeof(*ext)) || too_short(c, (ext->hdrlen + 1) * 8)) {
			k->ip_proto = nexthdr;
			k->flags |= FLOW_F_TRUNCATED;
			return;
		}
		nexthdr = ext->nexthdr;
		c->pos += (ext->hdrlen + 1) * 8;
	}
	k->ip_proto = nexthdr;
	if (ipv6_ext_hdr(nexthdr)) {
		/* Chain longer than we follow: keep the last header seen, no ports. */
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	parse_l4(c, k);
}

static __always_inline void parse_arp(struct cursor *c, struct flow_key *k)
{
	struct arp_ipv4 *arp = c->pos;

	if (too_short(c, 8)) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	k->dst_port = bpf_ntohs(arp->op);
	if (arp->pro != bpf_htons(ETH_P_IP_) || arp->hln != 6 || arp->pln != 4)
		return;
	if (too_short(c, sizeof(*arp))) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	__builtin_memcpy(k->src_addr, arp->spa, 4);
	__builtin_memcpy(k->dst_addr, arp->tpa, 4);
}

/* parse_l3 dispatches on the EtherType already stored in k (host order). */
static __always_inline void parse_l3(struct cursor *c, struct flow_key *k)
{
	switch (k->eth_proto) {
	case ETH_P_IP_:
		parse_ipv4(c, k);
		break;
	case ETH_P_IPV6_:
		parse_ipv6(c, k);
		break;
	case ETH_P_ARP_:
		parse_arp(c, k);
		break;
	}
}

/*
 * parse_eth parses from the Ethernet header. If the outer VLAN tag was
 * already taken out of the packet (skb->vlan_tci), k->vlan_id holds it and
 * in-band tags are inner ones, which are skipped but not recorded.
 */
static __always_inline void parse_eth(struct cursor *c, struct flow_key *k, int have_outer_vlan)
{
	struct ethhdr *eth = c->pos;

	if (too_short(c, sizeof(*eth))) {
		k->flags |= FLOW_F_TRUNCATED;
		return;
	}
	__be16 proto = eth->h_proto;
	c->pos += sizeof(*eth);

	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		struct vlan_tag *tag = c->pos;
		if (too_short(c, sizeof(*tag))) {
			k->eth_proto = bpf_ntohs(proto);
			k->flags |= FLOW_F_TRUNCATED;
			return;
		}
		if (!have_outer_vlan) {
			k->vlan_id = bpf_ntohs(tag->tci) & 0x0fff;
			have_outer_vlan = 1;
		}
		proto = tag->encap_proto;
		c->pos += sizeof(*tag);
	}
	k->eth_proto = bpf_ntohs(proto);
	parse_l3(c, k);
}

#endif /* PKTSTAT_PARSE_H */
