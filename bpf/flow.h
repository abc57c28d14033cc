/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* Types shared by the kernel programs and user space (bpf2go turns them into Go). */
#ifndef PKTSTAT_FLOW_H
#define PKTSTAT_FLOW_H

enum flow_direction {
	FLOW_INGRESS = 0,
	FLOW_EGRESS = 1,
};

enum flow_flags {
	FLOW_F_FRAGMENT = 1 << 0,  /* non-first IP fragment: no ports */
	FLOW_F_TRUNCATED = 1 << 1, /* a header was short or malformed: fields past it are 0 */
};

/*
 * One flow as the TC and XDP programs key it: 48 bytes, no implicit padding.
 * IPv4 and ARP addresses take the first 4 bytes of the address fields; the
 * EtherType says which family the addresses are. Ports carry protocol
 * identifiers for port-less protocols (ICMP type/code, GRE flags/protocol,
 * ESP/AH SPI halves, OSPF version/type, ARP 0/operation).
 */
struct flow_key {
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u32 ifindex;
	__u16 src_port;
	__u16 dst_port;
	__u16 eth_proto; /* host byte order */
	__u16 vlan_id;   /* outer VLAN id, 0 if untagged */
	__u8 ip_proto;
	__u8 direction;
	__u8 flags;
	__u8 _pad;
};

/* Application protocols, decided once per flow from its first payload bytes. */
enum app_proto {
	APP_UNDECIDED = 0,
	APP_NONE = 1, /* payload seen, nothing matched */
	APP_HTTP = 2,
	APP_HTTP2 = 3,
	APP_TLS = 4,
	APP_DTLS = 5,
	APP_QUIC = 6,
	APP_SSH = 7,
	APP_RDP = 8,
	APP_POSTGRESQL = 9,
	APP_MQTT = 10,
	APP_WIREGUARD = 11,
	APP_MEMCACHED = 12,
	APP_DNS = 13,
};

/*
 * Counters of one flow: one value per flow in the flow and retransmit
 * tables, which every CPU adds to atomically (maps.h, bump_shared), and one
 * per possible CPU in the per-CPU overflow and filtered totals.
 * first_seen_ns is set when the entry is created (in a per-CPU table, on
 * the creating CPU's copy only); app_proto is decided once per value.
 *
 * The TCP flag counters are 32 bits to keep the value at 48 bytes (a per-CPU
 * value exists once per possible CPU per entry). They wrap; user space takes
 * each drain's growth modulo 2^32, exact as long as fewer than 2^32 such
 * packets of one flow are counted between drains.
 */
struct flow_counters {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns; /* bpf_ktime_get_ns() at insertion */
	__u32 tcp_syn;       /* SYN without ACK */
	__u32 tcp_synack;    /* SYN with ACK */
	__u32 tcp_fin;       /* FIN, with or without ACK */
	__u32 tcp_rst;       /* RST, with or without ACK */
	__u8 app_proto;      /* enum app_proto */
	__u8 app_tries;      /* payload packets inspected without a match */
	__u8 _pad[6];
};

/* Packets of flows that found the flow table full, per interface and direction. */
struct overflow_key {
	__u32 ifindex;
	__u8 direction;
	__u8 _pad[3];
};

/* Cgroup mode adds the socket's cgroup and owner to the key. */
struct cgroup_flow_key {
	struct flow_key flow;
	__u64 cgroup_id;
	__u32 pid;
	char comm[16];
	__u8 _pad[4];
};

/* The process that created a socket, keyed by socket cookie. */
struct sock_owner {
	__u32 pid;
	char comm[16];
};

#endif /* PKTSTAT_FLOW_H */
