/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * Application protocol detection from a flow's first payload bytes. It runs
 * only while a flow's protocol is undecided (one byte compare per packet
 * afterwards) and gives up after APP_MAX_TRIES payload packets, so the
 * per-packet cost stays in the parse budget. Signatures check structure,
 * not just a magic byte, so that random payloads do not match.
 */
#ifndef PKTSTAT_APPPROTO_H
#define PKTSTAT_APPPROTO_H

#include "flow.h"
#include "parse.h"

/* Payload packets inspected (per CPU) before a flow is declared APP_NONE. */
#define APP_MAX_TRIES 4

static __always_inline int bytes_eq(const __u8 *p, const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (p[i] != (__u8)s[i])
			return 0;
	return 1;
}

static __always_inline __u8 detect_tcp(const __u8 *p, __u32 avail)
{
	if (avail >= 8) {
		if (bytes_eq(p, "PRI * HT", 8))
			return APP_HTTP2;
		if (bytes_eq(p, "SSH-2.0-", 8) || bytes_eq(p, "SSH-1.99", 8))
			return APP_SSH;
		if (bytes_eq(p, "HTTP/1.", 7) || bytes_eq(p, "GET /", 5) || bytes_eq(p, "POST /", 6) ||
		    bytes_eq(p, "PUT /", 5) || bytes_eq(p, "HEAD /", 6) || bytes_eq(p, "DELETE /", 8) ||
		    bytes_eq(p, "PATCH /", 7) || bytes_eq(p, "OPTIONS ", 8) || bytes_eq(p, "CONNECT ", 8))
			return APP_HTTP;
		/* PostgreSQL startup (protocol 3.0), SSLRequest or GSSENCRequest: length, then code. */
		__u32 len = (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
		__u32 code = (__u32)p[4] << 24 | (__u32)p[5] << 16 | (__u32)p[6] << 8 | p[7];
		if ((code == 0x00030000 && len >= 9 && len < 10000) ||
		    ((code == 0x04d2162f || code == 0x04d21630) && len == 8))
			return APP_POSTGRESQL;
	}
	/* TLS handshake record: ClientHello or ServerHello. */
	if (avail >= 6 && p[0] == 0x16 && p[1] == 0x03 && p[2] <= 0x04 && (p[5] == 0x01 || p[5] == 0x02))
		return APP_TLS;
	/* RDP: TPKT version 3, then an X.224 connection request or confirm. */
	if (avail >= 6 && p[0] == 0x03 && p[1] == 0x00 && (p[5] == 0xe0 || p[5] == 0xd0))
		return APP_RDP;
	/* MQTT CONNECT with a one-byte remaining length: protocol name "MQTT" or "MQIsdp". */
	if (avail >= 8 && p[0] == 0x10 && p[1] < 0x80 && p[2] == 0x00 &&
	    ((p[3] == 4 && bytes_eq(p + 4, "MQTT", 4)) || (p[3] == 6 && bytes_eq(p + 4, "MQIs", 4))))
		return APP_MQTT;
	/* memcached binary protocol: magic, data type 0, within a 24-byte header. */
	if (avail >= 24 && (p[0] == 0x80 || p[0] == 0x81) && p[5] == 0x00 && p[4] <= 20)
		return APP_MEMCACHED;
	return APP_UNDECIDED;
}

static __always_inline __u8 detect_udp(const __u8 *p, __u32 avail, __u32 payload_len, __u16 sport, __u16 dport)
{
	if (avail < 4)
		return APP_UNDECIDED;
	/* QUIC long header (v1, v2): header form and fixed bit, known version, sane DCID length. */
	if (avail >= 6 && (p[0] & 0xc0) == 0xc0 && p[5] <= 20 &&
	    ((p[1] == 0 && p[2] == 0 && p[3] == 0 && p[4] == 1) ||
	     (p[1] == 0x6b && p[2] == 0x33 && p[3] == 0x43 && p[4] == 0xcf)))
		return APP_QUIC;
	/* DTLS handshake record, epoch 0. */
	if (avail >= 5 && p[0] == 0x16 && p[1] == 0xfe && (p[2] == 0xff || p[2] == 0xfd) && p[3] == 0 && p[4] == 0)
		return APP_DTLS;
	/* WireGuard: message type, three reserved zero bytes, and the type's exact size. */
	if (p[1] == 0 && p[2] == 0 && p[3] == 0 &&
	    ((p[0] == 1 && payload_len == 148) || (p[0] == 2 && payload_len == 92) ||
	     (p[0] == 3 && payload_len == 64) || (p[0] == 4 && payload_len >= 32 && payload_len % 16 == 0)))
		return APP_WIREGUARD;
	/* DNS, mDNS, LLMNR: known port and a header with 1-4 questions and a standard opcode. */
	if (avail >= 12 && (sport == 53 || dport == 53 || sport == 5353 || dport == 5353 || sport == 5355 || dport == 5355)) {
		__u16 qd = (__u16)p[4] << 8 | p[5];
		__u8 opcode = (p[2] >> 3) & 0x0f;
		if (qd >= 1 && qd <= 4 && opcode <= 2 && (p[3] & 0x40) == 0)
			return APP_DNS;
	}
	return APP_UNDECIDED;
}

/* The first payload bytes of a packet, copied for detect_payload. */
struct app_sample {
	__u8 data[24];
	__u32 avail;       /* bytes valid in data */
	__u32 payload_len; /* transport payload length */
	__u16 src_port;
	__u16 dst_port;
	__u8 ip_proto;
	__u8 _pad[3];
};

/*
 * detect_payload is a function of its own, not inlined, so the parse paths
 * that reach it share one copy. It is static: a global function would be
 * verified once on its own, but before 5.12 a global function takes only a
 * context pointer or scalars, and 5.10's verifier rejects the sample
 * pointer ("Arg#0 type PTR in detect_payload() is not supported yet").
 */
static __noinline __u8 detect_payload(const struct app_sample *s)
{
	if (!s)
		return APP_UNDECIDED;
	if (s->ip_proto == IPPROTO_TCP_)
		return detect_tcp(s->data, s->avail);
	return detect_udp(s->data, s->avail, s->payload_len, s->src_port, s->dst_port);
}

/* app_update decides fc's protocol from this packet if it carries payload. */
static __always_inline void app_update(struct flow_counters *fc, const struct cursor *c, const struct flow_key *k)
{
	__u8 *l4 = c->l4;
	__u8 *end = c->limit ? c->limit : c->end;
	__u8 *payload;

	if (!l4)
		return;
	if (k->ip_proto == IPPROTO_TCP_) {
		if (l4 + 13 > (__u8 *)c->end)
			return;
		__u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20)
			return;
		payload = l4 + doff;
	} else {
		payload = l4 + 8;
	}
	long rem = end - payload;
	if (rem <= 0)
		return;

	struct app_sample s;
	__builtin_memset(&s, 0, sizeof(s));
	__u32 n = rem > (long)sizeof(s.data) ? sizeof(s.data) : rem;
	/* One bounded copy instead of a per-byte loop the verifier would unroll. */
	if (bpf_probe_read_kernel(s.data, n & 0x1f, payload))
		return;
	s.avail = n;
	s.payload_len = rem;
	s.src_port = k->src_port;
	s.dst_port = k->dst_port;
	s.ip_proto = k->ip_proto;

	__u8 app = detect_payload(&s);
	if (app != APP_UNDECIDED)
		fc->app_proto = app;
	else if (++fc->app_tries >= APP_MAX_TRIES)
		fc->app_proto = APP_NONE;
}

#endif /* PKTSTAT_APPPROTO_H */
