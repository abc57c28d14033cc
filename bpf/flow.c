// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//go:build ignore

/* TC and XDP flow counters: one flow table, programs for each hook. */

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
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
} flows SEC(".maps");

/*
 * Context loads written as one instruction at ctx+offset: left to itself the
 * compiler may move the ctx pointer first, which the verifier rejects.
 */
#define CTX_U32(ctx, field)                                                      \
	({                                                                        \
		__u64 __v;                                                        \
		asm volatile("%0 = *(u32 *)(%1 + %2)"                             \
			     : "=r"(__v)                                          \
			     : "r"(ctx), "i"(__builtin_offsetof(typeof(*(ctx)), field))); \
		__v;                                                              \
	})

/* Headers we may read: Ethernet + 2 VLAN tags + IPv6 + extension headers + L4. */
#define TC_PULL_LEN 256

static __always_inline void count_tc(struct __sk_buff *skb, __u8 direction)
{
	struct flow_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = skb->ifindex;
	key.direction = direction;

	int have_outer_vlan = 0;
	if (skb->vlan_present) {
		key.vlan_id = skb->vlan_tci & 0x0fff;
		have_outer_vlan = 1;
	}

	/*
	 * Headers outside the linear area are invisible to direct packet
	 * access; pulling costs a copy, so only do it when they are missing.
	 */
	__u32 len = CTX_U32(skb, len);
	__u32 linear = CTX_U32(skb, data_end) - CTX_U32(skb, data);
	if (linear < len && linear < TC_PULL_LEN)
		bpf_skb_pull_data(skb, len < TC_PULL_LEN ? len : TC_PULL_LEN);

	struct cursor c = {
		.pos = (void *)(long)CTX_U32(skb, data),
		.end = (void *)(long)CTX_U32(skb, data_end),
	};
	parse_eth(&c, &key, have_outer_vlan);
	if (filter_enabled && filter_packet(&key, len))
		return;
	count_flow(&flows, &key, &key, &c, len);
}

/* TC_ACT_UNSPEC (TCX_NEXT): let the next program or filter decide. */
SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	count_tc(skb, FLOW_INGRESS);
	return -1;
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	count_tc(skb, FLOW_EGRESS);
	return -1;
}

SEC("xdp")
int xdp_ingress(struct xdp_md *ctx)
{
	struct flow_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = ctx->ingress_ifindex;
	key.direction = FLOW_INGRESS;

	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	__u64 len = c.end - c.pos;
	parse_eth(&c, &key, 0);
	if (!(filter_enabled && filter_packet(&key, len)))
		count_flow(&flows, &key, &key, &c, len);
	return XDP_PASS;
}
