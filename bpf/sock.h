/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * A socket's ends as a flow key, for the programs that hook the socket
 * layer (kprobe.c, tcpsock.c). Needs vmlinux.h, bpf_core_read.h,
 * bpf_endian.h and flow.h first.
 */
#ifndef PKTSTAT_SOCK_H
#define PKTSTAT_SOCK_H

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* Local and remote ends of a socket or datagram, before they become a key. */
struct ends {
	__u8 laddr[16], raddr[16]; /* first: the stack wants aligned loads */
	__u16 family;
	__u16 lport, rport; /* host byte order */
} __attribute__((aligned(8)));

static __always_inline int v4mapped(const __u8 *a)
{
	__u64 hi = *(const __u64 *)a;
	__u32 mid = *(const __u32 *)(a + 8);
	return hi == 0 && mid == bpf_htonl(0x0000ffff);
}

static __always_inline void sock_ends(struct ends *e, struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->raddr, sk, __sk_common.skc_daddr);
	}
}

/* keyed fills key from e: IPv4 over a dual-stack socket becomes IPv4. */
static __always_inline void keyed(struct cgroup_flow_key *key, struct ends *e, __u8 proto, __u8 direction)
{
	__u16 eth = ETH_P_IP;
	if (e->family == AF_INET6) {
		if (v4mapped(e->raddr)) {
			__builtin_memcpy(e->raddr, e->raddr + 12, 4);
			__builtin_memset(e->raddr + 4, 0, 12);
			if (v4mapped(e->laddr))
				__builtin_memcpy(e->laddr, e->laddr + 12, 4);
			else
				__builtin_memset(e->laddr, 0, 4);
			__builtin_memset(e->laddr + 4, 0, 12);
		} else {
			eth = ETH_P_IPV6;
		}
	}
	key->flow.eth_proto = eth;
	key->flow.ip_proto = proto;
	key->flow.direction = direction;
	if (direction == FLOW_EGRESS) {
		__builtin_memcpy(key->flow.src_addr, e->laddr, 16);
		__builtin_memcpy(key->flow.dst_addr, e->raddr, 16);
		key->flow.src_port = e->lport;
		key->flow.dst_port = e->rport;
	} else {
		__builtin_memcpy(key->flow.src_addr, e->raddr, 16);
		__builtin_memcpy(key->flow.dst_addr, e->laddr, 16);
		key->flow.src_port = e->rport;
		key->flow.dst_port = e->lport;
	}
}

static __always_inline __u64 sock_cgroup(struct sock *sk)
{
	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

#endif /* PKTSTAT_SOCK_H */
