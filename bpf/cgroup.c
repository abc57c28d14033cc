// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//go:build ignore

/*
 * cgroup_skb flow counters with the owning process of each socket. Packets
 * start at the network header here, so bytes are L3 lengths.
 */

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "errno.h"
#include "flow.h"
#include "parse.h"
#include "maps.h"
#include "filter.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/*
 * The flow table, one value per flow shared by the CPUs (maps.h,
 * bump_shared); max_entries is replaced by max_flows when loading.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct cgroup_flow_key);
	__type(value, struct flow_counters);
} cgroup_flows SEC(".maps");

/*
 * Socket cookie -> creating process. Filled by sock_create and, for sockets
 * that existed before start, from user space; emptied by sock_release. LRU
 * so that a release we never saw cannot fill it for good.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_owner);
} sock_owners SEC(".maps");

static __always_inline void count_cgroup(struct __sk_buff *skb, __u8 direction)
{
	struct cgroup_flow_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.flow.ifindex = skb->ifindex;
	key.flow.direction = direction;
	key.flow.eth_proto = bpf_ntohs(skb->protocol);
	key.cgroup_id = bpf_skb_cgroup_id(skb);

	__u64 cookie = bpf_get_socket_cookie(skb);
	struct sock_owner *owner = bpf_map_lookup_elem(&sock_owners, &cookie);
	if (owner) {
		key.pid = owner->pid;
		__builtin_memcpy(key.comm, owner->comm, sizeof(key.comm));
	}

	struct cursor c = {
		.pos = (void *)(long)skb->data,
		.end = (void *)(long)skb->data_end,
	};
	parse_l3(&c, &key.flow);
	if (filter_enabled && filter_packet(&key.flow, skb->len))
		return;
	count_flow(&cgroup_flows, &key, &key.flow, &c, skb->len);
}

/* Return 1: allow the packet; counting never filters. */
SEC("cgroup_skb/ingress")
int cgroup_ingress(struct __sk_buff *skb)
{
	count_cgroup(skb, FLOW_INGRESS);
	return 1;
}

SEC("cgroup_skb/egress")
int cgroup_egress(struct __sk_buff *skb)
{
	count_cgroup(skb, FLOW_EGRESS);
	return 1;
}

/* Runs in the creating task's context, so pid and comm are the owner's. */
SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct sock_owner owner = {
		.pid = bpf_get_current_pid_tgid() >> 32,
	};
	bpf_get_current_comm(owner.comm, sizeof(owner.comm));
	bpf_map_update_elem(&sock_owners, &cookie, &owner, BPF_ANY);
	return 1;
}

SEC("cgroup/sock_release")
int sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	bpf_map_delete_elem(&sock_owners, &cookie);
	return 1;
}
