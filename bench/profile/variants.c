// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//go:build ignore

/*
 * Profiling variants of tc_ingress, compiled and run by bench/profile: each
 * keeps one part of the per-packet work, so BPF_PROG_TEST_RUN against an
 * empty program says what each part costs on this host.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "errno.h"
#include "flow.h"
#include "parse.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_key);
} sink SEC(".maps");

#define CTX_U32(ctx, field)                                                      \
	({                                                                        \
		__u64 __v;                                                        \
		asm volatile("%0 = *(u32 *)(%1 + %2)"                             \
			     : "=r"(__v)                                          \
			     : "r"(ctx), "i"(__builtin_offsetof(typeof(*(ctx)), field))); \
		__v;                                                              \
	})

/* parse_key is the parse every parsing variant shares: memset, ifindex, eth/ip/l4. */
static __always_inline void parse_key(struct __sk_buff *skb, struct flow_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->ifindex = skb->ifindex;
	struct cursor c = {
		.pos = (void *)(long)CTX_U32(skb, data),
		.end = (void *)(long)CTX_U32(skb, data_end),
	};
	parse_eth(&c, key, 0);
}

/* parse only: key built and stored in a per-CPU array slot, no hash. */
SEC("tc")
int parse_only(struct __sk_buff *skb)
{
	struct flow_key key;
	parse_key(skb, &key);
	__u32 zero = 0;
	struct flow_key *s = bpf_map_lookup_elem(&sink, &zero);
	if (s)
		*s = key;
	return -1;
}

/* hash only: a constant key, lookup and bump, no parse. */
SEC("tc")
int hash_only(struct __sk_buff *skb)
{
	struct flow_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = skb->ifindex;
	struct flow_counters *c = bpf_map_lookup_elem(&flows, &key);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
		return -1;
	}
	struct flow_counters init = { .packets = 1 };
	bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST);
	return -1;
}

struct key24 {
	__u32 saddr, daddr, ifindex;
	__u16 sport, dport, eth_proto, vlan_id;
	__u8 ip_proto, direction, flags, pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct key24);
	__type(value, struct flow_counters);
} flows24 SEC(".maps");

/* hash only with a 24-byte IPv4 key. */
SEC("tc")
int hash24_only(struct __sk_buff *skb)
{
	struct key24 key;
	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = skb->ifindex;
	struct flow_counters *c = bpf_map_lookup_elem(&flows24, &key);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
		return -1;
	}
	struct flow_counters init = { .packets = 1 };
	bpf_map_update_elem(&flows24, &key, &init, BPF_NOEXIST);
	return -1;
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
} flows_shared SEC(".maps");

/* hash only, non-per-CPU map with atomics: the per-CPU pointer step removed. */
SEC("tc")
int hash_shared(struct __sk_buff *skb)
{
	struct flow_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = skb->ifindex;
	struct flow_counters *c = bpf_map_lookup_elem(&flows_shared, &key);
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, skb->len);
		return -1;
	}
	struct flow_counters init = { .packets = 1 };
	bpf_map_update_elem(&flows_shared, &key, &init, BPF_NOEXIST);
	return -1;
}

/* one non-inlined helper call: the fixed price of calling into the kernel. */
SEC("tc")
int one_call(struct __sk_buff *skb)
{
	return bpf_get_prandom_u32() ? -1 : -1;
}

/* a per-CPU array lookup (inlined by the verifier) and bump, for comparison. */
SEC("tc")
int array_bump(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct flow_key *s = bpf_map_lookup_elem(&sink, &zero);
	if (s)
		s->ifindex++;
	return -1;
}

/*
 * The hit path of a per-CPU direct-mapped flow cache in front of the hash
 * (the design bench/README.md weighs): a flow whose key sits in its slot is
 * counted with an inlined array lookup and no helper call. A miss takes the
 * hash path and installs the key; the eviction's flush into the hash, which
 * a real program needs, is left out, so only the hit row is meaningful.
 */
#define CACHE_SLOTS 4096

struct cache_entry {
	struct flow_key key;
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct cache_entry);
} flow_cache SEC(".maps");

static __always_inline __u32 key_slot(const __u64 *w)
{
	__u64 h = w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5];
	h *= 0x9E3779B97F4A7C15ULL;
	return (h >> 40) & (CACHE_SLOTS - 1);
}

static __always_inline int key_eq(const __u64 *a, const __u64 *b)
{
	return !((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5]));
}

SEC("tc")
int parse_cache(struct __sk_buff *skb)
{
	struct flow_key key __attribute__((aligned(8)));
	parse_key(skb, &key);
	__u32 slot = key_slot((const __u64 *)&key);
	struct cache_entry *e = bpf_map_lookup_elem(&flow_cache, &slot);
	if (!e)
		return -1;
	if (key_eq((const __u64 *)&e->key, (const __u64 *)&key)) {
		e->packets++;
		e->bytes += skb->len;
		return -1;
	}
	struct flow_counters *fc = bpf_map_lookup_elem(&flows, &key);
	if (fc) {
		fc->packets++;
		fc->bytes += skb->len;
	} else {
		struct flow_counters init = { .packets = 1 };
		bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST);
	}
	e->key = key;
	e->packets = 0;
	e->bytes = 0;
	return -1;
}

/*
 * The counter-slot design (bench/README.md, "Drain"): a plain hash maps a
 * flow's key to a slot once, and the counters live in a BPF_F_MMAPABLE
 * array that user space reads as memory instead of copying every entry
 * through BPF_MAP_LOOKUP_BATCH. Two layouts of the array: one lane per
 * possible CPU per slot (plain stores, like the per-CPU hash; ncpu lanes
 * per flow) and one shared counter per slot (atomic adds; one lane per
 * flow, whatever the CPU count). Slots are handed out by a counter here;
 * a real program needs a free list for expired flows, which the hit path
 * timed here never touches, nor the races between CPUs creating a slot.
 */
const volatile __u32 ncpu = 1;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct flow_key);
	__type(value, __u32);
} slot_of SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct key24);
	__type(value, __u32);
} slot_of24 SEC(".maps");

/* max_entries is set from Go: 131072 lanes per possible CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_counters);
} lanes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct flow_counters);
} shared_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} next_slot SEC(".maps");

static __always_inline __u32 *new_slot(void *map, const void *key)
{
	__u32 zero = 0;
	__u32 *n = bpf_map_lookup_elem(&next_slot, &zero);
	if (!n)
		return 0;
	/* Not atomic: test runs create flows on one CPU at a time, and the
	 * creation path is not what is timed. */
	__u32 s = (*n)++;
	if (s >= 131072)
		return 0;
	bpf_map_update_elem(map, key, &s, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

static __always_inline void bump_lane(__u32 slot, __u64 len)
{
	__u32 idx = slot * ncpu + bpf_get_smp_processor_id();
	struct flow_counters *c = bpf_map_lookup_elem(&lanes, &idx);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline void bump_slot_shared(__u32 slot, __u64 len)
{
	struct flow_counters *c = bpf_map_lookup_elem(&shared_slots, &slot);
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, len);
	}
}

static __always_inline void to_key24(const struct flow_key *k, struct key24 *k4)
{
	__builtin_memset(k4, 0, sizeof(*k4));
	__builtin_memcpy(&k4->saddr, k->src_addr, 4);
	__builtin_memcpy(&k4->daddr, k->dst_addr, 4);
	k4->ifindex = k->ifindex;
	k4->sport = k->src_port;
	k4->dport = k->dst_port;
	k4->eth_proto = k->eth_proto;
	k4->vlan_id = k->vlan_id;
	k4->ip_proto = k->ip_proto;
	k4->direction = k->direction;
	k4->flags = k->flags;
}

static __always_inline int do_parse_hash(struct __sk_buff *skb)
{
	struct flow_key key;
	parse_key(skb, &key);
	struct flow_counters *fc = bpf_map_lookup_elem(&flows, &key);
	if (fc) {
		fc->packets++;
		fc->bytes += skb->len;
		return -1;
	}
	struct flow_counters init = { .packets = 1 };
	bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST);
	return -1;
}

/* parse, then the flow's one shared value in a plain hash, atomic adds. */
static __always_inline int do_parse_shared(struct __sk_buff *skb)
{
	struct flow_key key;
	parse_key(skb, &key);
	struct flow_counters *fc = bpf_map_lookup_elem(&flows_shared, &key);
	if (fc) {
		__sync_fetch_and_add(&fc->packets, 1);
		__sync_fetch_and_add(&fc->bytes, skb->len);
		return -1;
	}
	struct flow_counters init = { .packets = 1 };
	bpf_map_update_elem(&flows_shared, &key, &init, BPF_NOEXIST);
	return -1;
}

static __always_inline int do_parse_hash24(struct __sk_buff *skb)
{
	struct flow_key key;
	struct key24 k4;
	parse_key(skb, &key);
	to_key24(&key, &k4);
	struct flow_counters *fc = bpf_map_lookup_elem(&flows24, &k4);
	if (fc) {
		fc->packets++;
		fc->bytes += skb->len;
		return -1;
	}
	struct flow_counters init = { .packets = 1 };
	bpf_map_update_elem(&flows24, &k4, &init, BPF_NOEXIST);
	return -1;
}

static __always_inline int do_slot_lane(struct __sk_buff *skb)
{
	struct flow_key key;
	parse_key(skb, &key);
	__u32 *s = bpf_map_lookup_elem(&slot_of, &key);
	if (!s)
		s = new_slot(&slot_of, &key);
	if (s)
		bump_lane(*s, skb->len);
	return -1;
}

static __always_inline int do_slot24_lane(struct __sk_buff *skb)
{
	struct flow_key key;
	struct key24 k4;
	parse_key(skb, &key);
	to_key24(&key, &k4);
	__u32 *s = bpf_map_lookup_elem(&slot_of24, &k4);
	if (!s)
		s = new_slot(&slot_of24, &k4);
	if (s)
		bump_lane(*s, skb->len);
	return -1;
}

static __always_inline int do_slot_shared(struct __sk_buff *skb)
{
	struct flow_key key;
	parse_key(skb, &key);
	__u32 *s = bpf_map_lookup_elem(&slot_of, &key);
	if (!s)
		s = new_slot(&slot_of, &key);
	if (s)
		bump_slot_shared(*s, skb->len);
	return -1;
}

/* parse and hash, no app detection and no pull check: the minimum of the design. */
SEC("tc")
int parse_hash(struct __sk_buff *skb) { return do_parse_hash(skb); }
/* the same with one shared value per flow in a plain hash, atomic adds. */
SEC("tc")
int parse_shared(struct __sk_buff *skb) { return do_parse_shared(skb); }
/* the same with the IPv4 fields moved into a 24-byte key. */
SEC("tc")
int parse_hash24(struct __sk_buff *skb) { return do_parse_hash24(skb); }
SEC("tc")
int slot_lane(struct __sk_buff *skb) { return do_slot_lane(skb); }
SEC("tc")
int slot24_lane(struct __sk_buff *skb) { return do_slot24_lane(skb); }
SEC("tc")
int slot_shared(struct __sk_buff *skb) { return do_slot_shared(skb); }

/*
 * Cycling: each run first rewrites the low 16 bits of the IPv4 source
 * address (frame bytes 28 and 29) to the next of CYCLE_FLOWS values, so
 * successive runs of one BPF_PROG_TEST_RUN visit CYCLE_FLOWS flows in turn,
 * as the bench's cycler does; cyc_empty is its baseline. Each variant is
 * inlined behind the rewrite, not tail-called, so all rows pay the same.
 */
#define CYCLE_FLOWS 10000

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cycle_pos SEC(".maps");

static __always_inline void cycle(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *pos = bpf_map_lookup_elem(&cycle_pos, &zero);
	if (!pos)
		return;
	__u32 i = *pos + 1;
	if (i >= CYCLE_FLOWS)
		i = 0;
	*pos = i;
	__u8 *data = (void *)(long)skb->data;
	if (data + 30 > (__u8 *)(long)skb->data_end)
		return;
	data[28] = i >> 8;
	data[29] = i;
}

SEC("tc")
int cyc_empty(struct __sk_buff *skb) { cycle(skb); return -1; }
SEC("tc")
int cyc_parse_hash(struct __sk_buff *skb) { cycle(skb); return do_parse_hash(skb); }
SEC("tc")
int cyc_parse_shared(struct __sk_buff *skb) { cycle(skb); return do_parse_shared(skb); }
SEC("tc")
int cyc_parse_hash24(struct __sk_buff *skb) { cycle(skb); return do_parse_hash24(skb); }
SEC("tc")
int cyc_slot_lane(struct __sk_buff *skb) { cycle(skb); return do_slot_lane(skb); }
SEC("tc")
int cyc_slot24_lane(struct __sk_buff *skb) { cycle(skb); return do_slot24_lane(skb); }
SEC("tc")
int cyc_slot_shared(struct __sk_buff *skb) { cycle(skb); return do_slot_shared(skb); }

