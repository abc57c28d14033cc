package core

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// clientHello returns the first bytes a real TLS client sends.
func clientHello(t testing.TB) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: "example.com", InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(2 * time.Second))
		tc.Handshake() // fails when s closes; only its first write matters
		c.Close()
	}()
	buf := make([]byte, 4096)
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := s.Read(buf)
	if err != nil {
		t.Fatalf("read client hello: %v", err)
	}
	return buf[:n]
}

func httpRequest(t testing.TB) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://example.com/index.html", nil)
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// quicInitial is a client Initial long header (RFC 9000 17.2.2) padded to 1200 bytes.
func quicInitial(version uint32) []byte {
	b := []byte{0xc3}
	b = binary.BigEndian.AppendUint32(b, version)
	b = append(b, 8, 0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08, 0, 0, 0x44, 0x9e)
	return append(b, make([]byte, 1200-len(b))...)
}

func dnsQuery(flags uint16, qd uint16) []byte {
	b := []byte{0x12, 0x34}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, qd)
	b = append(b, 0, 0, 0, 0, 0, 0)
	b = append(b, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1)
	return b
}

func tcpPacket(t testing.TB, sport, dport uint16, payload []byte) []byte {
	return serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP),
		&layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), PSH: true, ACK: true, Window: 500}, gopacket.Payload(payload))
}

func udpPacket(t testing.TB, sport, dport uint16, payload []byte) []byte {
	return serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolUDP),
		&layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, gopacket.Payload(payload))
}

// flowApp runs pkts through tc_egress in order and returns the app_proto
// decided for the single flow they form.
func flowApp(t *testing.T, objs *bpf.FlowObjects, pkts ...[]byte) string {
	t.Helper()
	clearMap(t, objs.Flows)
	for _, p := range pkts {
		if _, err := objs.TcEgress.Run(&ebpf.RunOptions{Data: p}); err != nil {
			t.Fatal(err)
		}
	}
	var k bpf.FlowFlowKey
	vals := make([]counters, lanesOf(t, objs.Flows))
	n := 0
	app := uint8(0)
	for it := objs.Flows.Iterate(); it.Next(&k, &vals); n++ {
		app = mergeAppProto(vals)
	}
	if n != 1 {
		t.Fatalf("want one flow, got %d", n)
	}
	if app == appNone {
		return "none"
	}
	return appProtoName(app)
}

func TestAppProtoDetection(t *testing.T) {
	objs := loadFlowForTest(t, 64)
	syn := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true})
	wgInit := append([]byte{1, 0, 0, 0}, make([]byte, 144)...)
	memcachedGet := append([]byte{0x80, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "foo"...)
	pgStartup := append([]byte{0, 0, 0, 0x21, 0, 3, 0, 0}, "user\x00postgres\x00database\x00x\x00\x00"...)
	for _, tc := range []struct {
		name string
		pkts [][]byte
		want string
	}{
		// Real first payloads.
		{"tls client hello after syn", [][]byte{syn, tcpPacket(t, 40000, 443, clientHello(t))}, "tls"},
		{"http/1.1 request", [][]byte{tcpPacket(t, 40001, 80, httpRequest(t))}, "http"},
		{"http/1.1 response", [][]byte{tcpPacket(t, 80, 40001, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))}, "http"},
		{"http/2 preface", [][]byte{tcpPacket(t, 40002, 8080, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))}, "http2"},
		{"ssh banner", [][]byte{tcpPacket(t, 22, 40003, []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"))}, "ssh"},
		{"rdp connection request", [][]byte{tcpPacket(t, 40004, 3389, []byte{3, 0, 0, 19, 14, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 3, 0, 0, 0})}, "rdp"},
		{"postgresql startup", [][]byte{tcpPacket(t, 40005, 5432, pgStartup)}, "postgresql"},
		{"postgresql sslrequest", [][]byte{tcpPacket(t, 40006, 5432, []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f})}, "postgresql"},
		{"mqtt connect", [][]byte{tcpPacket(t, 40007, 1883, []byte{0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0})}, "mqtt"},
		{"memcached binary get", [][]byte{tcpPacket(t, 40008, 11211, memcachedGet)}, "memcached"},
		{"quic v1 initial", [][]byte{udpPacket(t, 40009, 443, quicInitial(1))}, "quic"},
		{"quic v2 initial", [][]byte{udpPacket(t, 40010, 443, quicInitial(0x6b3343cf))}, "quic"},
		{"dtls 1.2 client hello", [][]byte{udpPacket(t, 40011, 4433, append([]byte{0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 1}, make([]byte, 64)...))}, "dtls"},
		{"wireguard handshake initiation", [][]byte{udpPacket(t, 40012, 51820, wgInit)}, "wireguard"},
		{"dns query", [][]byte{udpPacket(t, 40013, 53, dnsQuery(0x0100, 1))}, "dns"},
		{"mdns response", [][]byte{udpPacket(t, 5353, 5353, dnsQuery(0x8400, 1))}, "dns"},
		// Near misses stay undecided, and a flow gives up after four payload packets.
		{"syn only: undecided", [][]byte{syn}, ""},
		{"GETTING is not http", [][]byte{tcpPacket(t, 40020, 80, []byte("GETTING STARTED"))}, ""},
		{"ssh version 3 is not ssh", [][]byte{tcpPacket(t, 40021, 22, []byte("SSH-3.0-nope\r\n"))}, ""},
		{"tls record with version 3.9", [][]byte{tcpPacket(t, 40022, 443, []byte{0x16, 0x03, 0x09, 0, 5, 1, 0, 0, 1, 0})}, ""},
		{"dns port, zero questions", [][]byte{udpPacket(t, 40023, 53, dnsQuery(0x0100, 0))}, ""},
		{"dns-shaped payload off the dns ports", [][]byte{udpPacket(t, 40024, 9999, dnsQuery(0x0100, 1))}, ""},
		{"wireguard type with the wrong size", [][]byte{udpPacket(t, 40025, 51820, append([]byte{1, 0, 0, 0}, make([]byte, 96)...))}, ""},
		{"quic-like header, unknown version", [][]byte{udpPacket(t, 40026, 443, quicInitial(0x0a0a0a0a))}, ""},
		{"postgresql length too small", [][]byte{tcpPacket(t, 40027, 5432, []byte{0, 0, 0, 5, 0, 3, 0, 0, 0})}, ""},
		{"gives up after four payloads", [][]byte{tcpPacket(t, 40028, 9000, []byte("hello")), tcpPacket(t, 40028, 9000, []byte("world")),
			tcpPacket(t, 40028, 9000, []byte("again")), tcpPacket(t, 40028, 9000, []byte("more!")), tcpPacket(t, 40028, 9000, httpRequest(t))}, "none"},
		{"decided by the third payload", [][]byte{tcpPacket(t, 40029, 80, []byte("\r\n")), tcpPacket(t, 40029, 80, []byte("\r\n")), tcpPacket(t, 40029, 80, httpRequest(t))}, "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := flowApp(t, objs, tc.pkts...); got != tc.want {
				t.Errorf("app_proto %q, want %q", got, tc.want)
			}
		})
	}
}
