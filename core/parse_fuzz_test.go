package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// Differential fuzzing of bpf/parse.h: every input runs through the kernel
// program with BPF_PROG_TEST_RUN and through gopacket (parse_ref_test.go),
// and the two keys must agree field by field. `make test` runs each target
// for a bounded time, `make fuzz` for longer; without -fuzz the seeds below
// and testdata/fuzz/<target>/ run as ordinary test cases.

// maxFuzzFrame keeps inputs within what BPF_PROG_TEST_RUN takes in one
// linear buffer for both program types (a page less head- and tailroom).
const maxFuzzFrame = 2048

func FuzzTCIngress(f *testing.F)  { fuzzParse(f, true) }
func FuzzXDPIngress(f *testing.F) { fuzzParse(f, false) }

// parseFuzzer runs one program on fuzz inputs. Each fuzzing worker is a
// process of its own with its own loaded objects, but inside a process
// every input shares the one flow map: the mutex keeps a run and the map
// reads that judge it together.
type parseFuzzer struct {
	mu   sync.Mutex
	objs *bpf.FlowObjects
	prog *ebpf.Program
	ret  uint32
	tc   bool
}

func fuzzParse(f *testing.F, tc bool) {
	objs := loadFlowForTest(f, 1024)
	pf := &parseFuzzer{objs: objs, prog: objs.XdpIngress, ret: 2} // XDP_PASS
	if tc {
		pf.prog, pf.ret, pf.tc = objs.TcIngress, ^uint32(0), true // TC_ACT_UNSPEC: next
	}
	for _, s := range parseSeeds(f) {
		f.Add(s.pkt)
	}
	f.Fuzz(pf.check)
}

func (pf *parseFuzzer) check(t *testing.T, frame []byte) {
	if len(frame) > maxFuzzFrame {
		return
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	// An input that failed half way left its entry; the minimizer must not
	// blame the next one for it.
	clearMap(t, pf.objs.Flows)
	key, entry, err := pf.run(t, frame)
	if err != nil {
		if errors.Is(err, syscall.EINVAL) && kernelRefuses(frame, pf.tc) {
			return
		}
		t.Fatalf("run on %d bytes: %v", len(frame), err)
	}
	ref := referenceKey(frame)
	want := ref.key
	want.Ifindex, want.Direction = key.Ifindex, uint8(Ingress)
	if d := keyDiff(key, want); d != "" {
		t.Fatalf("kernel and gopacket keys differ:\n%sexceptions applied: %q\nframe: %x", d, ref.exceptions, frame)
	}
	if key.Ifindex == 0 {
		t.Errorf("ifindex is 0")
	}
	if key.Flags&uint8(FlagFragment|FlagTruncated) != 0 && key.EthProto != EtherTypeARP && (key.SrcPort != 0 || key.DstPort != 0) {
		t.Errorf("flags %#x with ports %d/%d: a fragment or a short header has none", key.Flags, key.SrcPort, key.DstPort)
	}
	// Nothing past the IP packet's own length may be read: with every byte
	// there inverted, the key and the payload verdict must stay the same.
	if ref.ipEnd > 0 {
		alt := slices.Clone(frame)
		for i := ref.ipEnd; i < len(alt); i++ {
			alt[i] = ^alt[i]
		}
		key2, entry2, err := pf.run(t, alt)
		if err != nil {
			t.Fatalf("run with the bytes past the IP length inverted: %v", err)
		}
		if d := keyDiff(key2, key); d != "" || entry2.app != entry.app {
			t.Fatalf("bytes past the IP packet's end (offset %d) changed the result:\n%sapp_proto %d, was %d\nframe: %x",
				ref.ipEnd, d, entry2.app, entry.app, frame)
		}
	}
}

// run runs the program once on frame, checks that it returned "next"/pass
// and added exactly one packet of len(frame) bytes to exactly one entry,
// and removes that entry so the next input starts from empty maps.
func (pf *parseFuzzer) run(t *testing.T, frame []byte) (bpf.FlowFlowKey, flowEntry, error) {
	t.Helper()
	ret, runErr := pf.prog.Run(&ebpf.RunOptions{Data: frame})
	flows := flowEntries(t, pf.objs.Flows)
	overflow := overflowPackets(t, pf.objs)
	if runErr != nil {
		if len(flows) != 0 || overflow != 0 {
			t.Fatalf("a refused run counted: %d flows, %d overflow packets", len(flows), overflow)
		}
		return bpf.FlowFlowKey{}, flowEntry{}, runErr
	}
	if ret != pf.ret {
		t.Fatalf("returned %d, want %d (the program must never drop or redirect)", int32(ret), int32(pf.ret))
	}
	if len(flows) != 1 || overflow != 0 {
		t.Fatalf("want one packet in one flow entry of an empty table, got %d entries %+v and %d overflow packets", len(flows), flows, overflow)
	}
	for k, e := range flows {
		if e.packets != 1 || e.bytes != uint64(len(frame)) {
			t.Fatalf("entry counts %d packets %d bytes, want 1 and %d", e.packets, e.bytes, len(frame))
		}
		if err := pf.objs.Flows.Delete(&k); err != nil {
			t.Fatalf("delete flow: %v", err)
		}
		return k, e, nil
	}
	panic("unreachable")
}

// overflowPackets is what both overflow maps hold.
func overflowPackets(t testing.TB, objs *bpf.FlowObjects) uint64 {
	t.Helper()
	var n uint64
	var k bpf.FlowOverflowKey
	var vals []counters
	it := objs.FlowsOverflow.Iterate()
	for it.Next(&k, &vals) {
		p, _, _ := sum(vals)
		n += p
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	var zero uint32
	if err := objs.FlowsOverflowTotal.Lookup(&zero, &vals); err != nil {
		t.Fatal(err)
	}
	p, _, _ := sum(vals)
	return n + p
}

// kernelRefuses says whether BPF_PROG_TEST_RUN may refuse frame with
// EINVAL (measured on 6.18): any program needs an Ethernet header, and skb
// programs also need the IP header the EtherType announces in the buffer.
func kernelRefuses(frame []byte, skb bool) bool {
	if len(frame) < 14 {
		return true
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case EtherTypeIPv4:
		return skb && len(frame) < 14+20
	case EtherTypeIPv6:
		return skb && len(frame) < 14+40
	}
	return false
}

// keyDiff lists the fields in which got and want differ, one per line.
func keyDiff(got, want bpf.FlowFlowKey) string {
	var b strings.Builder
	field := func(name string, g, w any) {
		if g != w {
			fmt.Fprintf(&b, "  %-9s kernel %v, gopacket %v\n", name, g, w)
		}
	}
	field("src_addr", fmt.Sprintf("%x", got.SrcAddr), fmt.Sprintf("%x", want.SrcAddr))
	field("dst_addr", fmt.Sprintf("%x", got.DstAddr), fmt.Sprintf("%x", want.DstAddr))
	field("src_port", got.SrcPort, want.SrcPort)
	field("dst_port", got.DstPort, want.DstPort)
	field("ip_proto", got.IpProto, want.IpProto)
	field("eth_proto", fmt.Sprintf("%#04x", got.EthProto), fmt.Sprintf("%#04x", want.EthProto))
	field("vlan_id", got.VlanId, want.VlanId)
	field("flags", got.Flags, want.Flags)
	field("ifindex", got.Ifindex, want.Ifindex)
	field("direction", got.Direction, want.Direction)
	return b.String()
}

// parseSeed is one starting frame for the fuzzer.
type parseSeed struct {
	name string
	pkt  []byte
}

// parseSeeds is every case of the parse table plus real payloads and the
// frames that reach each named exception of the reference decoder.
func parseSeeds(t testing.TB) []parseSeed {
	var seeds []parseSeed
	for _, c := range parseCases(t) {
		seeds = append(seeds, parseSeed{c.name, c.pkt})
	}
	add := func(name string, pkt []byte) { seeds = append(seeds, parseSeed{name, pkt}) }
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, ACK: true, Window: 1000}
	// A bare 20-byte TCP header, for chains a serializer cannot build.
	tcpHdr := []byte{0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0x03, 0xe8, 0, 0, 0, 0}
	udpHdr := func(sp, dp uint16, payload int) []byte {
		b := binary.BigEndian.AppendUint16(nil, sp)
		b = binary.BigEndian.AppendUint16(b, dp)
		b = binary.BigEndian.AppendUint16(b, uint16(8+payload))
		return append(append(b, 0, 0), make([]byte, payload)...)
	}
	vlan := func(id uint16, next layers.EthernetType) *layers.Dot1Q {
		return &layers.Dot1Q{VLANIdentifier: id, Type: next}
	}

	add("tls client hello", tcpPacket(t, 40000, 443, clientHello(t)))
	add("quic v1 initial over ipv6", udpPacket(t, 40009, 443, quicInitial(1)))
	add("dns query", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 40013, DstPort: 53}, gopacket.Payload(dnsQuery(0x0100, 1))))
	add("mdns response over qinq", serialize(t, eth(layers.EthernetTypeQinQ), vlan(300, layers.EthernetTypeDot1Q), vlan(7, layers.EthernetTypeIPv6),
		ip6(layers.IPProtocolUDP), &layers.UDP{SrcPort: 5353, DstPort: 5353}, gopacket.Payload(dnsQuery(0x8400, 1))))
	add("http request over 802.1q", serialize(t, eth(layers.EthernetTypeDot1Q), vlan(42, layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP),
		&layers.TCP{SrcPort: 40001, DstPort: 80, PSH: true, ACK: true}, gopacket.Payload(httpRequest(t))))
	add("three vlan tags", serialize(t, eth(layers.EthernetTypeQinQ), vlan(10, layers.EthernetTypeDot1Q), vlan(20, layers.EthernetTypeDot1Q),
		vlan(30, layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp))

	// IPv6 extension chains: router alert, a segment routing header with one segment, destination options.
	hbhAlert := []byte{byte(layers.IPProtocolIPv6Routing), 0, 5, 2, 0, 0, 1, 0}
	srh := append([]byte{byte(layers.IPProtocolIPv6Destination), 2, 4, 0, 0, 0, 0, 0}, v6B.AsSlice()...)
	add("ipv6 router alert, segment routing, destination options, tcp", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop),
		cat(hbhAlert, srh, ext(layers.IPProtocolTCP), tcpHdr)))
	add("ipv6 seven extension headers then udp", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop),
		cat(ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolIPv6Routing), ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolIPv6Destination),
			ext(layers.IPProtocolIPv6Fragment), frag6(layers.IPProtocolIPv6Destination, 0, false), ext(layers.IPProtocolUDP), udpHdr(5000, 5001, 4))))
	add("ipv6 hop-by-hop option longer than its header", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop),
		cat([]byte{byte(layers.IPProtocolUDP), 0, 0xc2, 9, 0, 0, 0, 0}, udpHdr(5000, 53, 0))))
	add("ipv6 ah then tcp", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolAH),
		cat([]byte{byte(layers.IPProtocolTCP), 1, 0, 0, 0xca, 0xfe, 0xf0, 0x0d, 0, 0, 0, 7}, tcpHdr)))

	// GRE with every optional field, carrying IPv4; a GRE header cut in its optional fields.
	add("gre with checksum, key and sequence", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolGRE),
		&layers.GRE{ChecksumPresent: true, KeyPresent: true, SeqPresent: true, Key: 7, Seq: 1, Protocol: layers.EthernetTypeIPv4},
		ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 1000, DstPort: 2000}, gopacket.Payload("inner")))
	add("gre cut in its optional fields", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolGRE), gopacket.Payload{0xb0, 0, 0x08, 0, 0, 0}))
	esp := append([]byte{0x00, 0x00, 0x10, 0x01, 0, 0, 0, 9}, make([]byte, 72)...)
	add("esp over ipv4", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolESP), gopacket.Payload(esp)))
	add("esp over ipv6 in 802.1q", serialize(t, eth(layers.EthernetTypeDot1Q), vlan(5, layers.EthernetTypeIPv6), ip6(layers.IPProtocolESP), gopacket.Payload(esp)))
	add("udplite over ipv6", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolUDPLite), gopacket.Payload{0x13, 0x88, 0x13, 0x89, 0, 8, 0, 0}))
	add("ospf version 9", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolOSPF), gopacket.Payload{9, 1, 0, 24}))

	// A 1400-byte UDP datagram in two IPv4 and two IPv6 fragments.
	dgram := udpHdr(40100, 4789, 1392)
	first, rest := dgram[:1208], dgram[1208:]
	f4 := ip4(layers.IPProtocolUDP)
	f4.Flags, f4.Id = layers.IPv4MoreFragments, 77
	add("ipv4 first fragment of a large datagram", serialize(t, eth(layers.EthernetTypeIPv4), f4, gopacket.Payload(first)))
	l4 := ip4(layers.IPProtocolUDP)
	l4.FragOffset, l4.Id = 1208/8, 77
	add("ipv4 last fragment of a large datagram", serialize(t, eth(layers.EthernetTypeIPv4), l4, gopacket.Payload(rest)))
	add("ipv6 first fragment of a large datagram", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Fragment), cat(frag6(layers.IPProtocolUDP, 0, true), first)))
	add("ipv6 last fragment of a large datagram", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Fragment), cat(frag6(layers.IPProtocolUDP, 1208/8, false), rest)))

	// IPv4 header variants.
	rr := ip4(layers.IPProtocolTCP)
	rr.Options = []layers.IPv4Option{{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, {OptionType: 0, OptionLength: 1}}
	withRR := serialize(t, eth(layers.EthernetTypeIPv4), rr, tcp)
	add("ipv4 record route option", withRR)
	badOpt := slices.Clone(withRR)
	badOpt[14+21] = 9 // the option claims more than the header holds
	add("ipv4 option longer than the header", badOpt)
	ihlPastLen := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 1, DstPort: 2})
	ihlPastLen[14] = 0x4f // 60-byte header in a 28-byte packet
	add("ipv4 ihl past the total length", ihlPastLen)
	add("ipv4 length beyond the frame", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 7, DstPort: 7}, gopacket.Payload(make([]byte, 100)))[:14+20+8+10])
	v6as4 := serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp)
	binary.BigEndian.PutUint16(v6as4[12:], EtherTypeIPv4)
	add("ipv6 header under the ipv4 ethertype", v6as4)
	jumbo := serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp, gopacket.Payload("x"))
	binary.BigEndian.PutUint16(jumbo[14+4:], 0)
	add("ipv6 payload length 0", jumbo)

	// Transport headers gopacket rejects.
	add("udp header of 6 bytes", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), gopacket.Payload{0x9c, 0x41, 0, 53, 0, 6}))
	badDoff := tcpPacket(t, 40000, 443, []byte("payload"))
	badDoff[14+20+12] = 0x30 // data offset 3
	add("tcp data offset 3", badDoff)
	add("icmp destination unreachable with the inner header", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 53, DstPort: 40000}))

	// Non-IP.
	add("arp reply", serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: 2, SourceHwAddress: macB, SourceProtAddress: v4B.AsSlice(), DstHwAddress: macA, DstProtAddress: v4A.AsSlice()}))
	add("arp for appletalk", rawEth(EtherTypeARP, 0, 1, 0x80, 0x9b, 6, 4, 0, 1, 1, 2, 3))
	add("802.3 llc frame (stp)", rawEth(0x0026, 0x42, 0x42, 0x03, 0, 0, 0, 0, 0, 0x80, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	return seeds
}

// allParseExceptions lists every named exception, each of which some seed reaches.
var allParseExceptions = []string{excLLCLength, excVLANDepth, excIPv4Options, excIPv4Header, excIPVersion, excIPv6ZeroLength,
	excIPv6ExtOptions, excIPv6ExtDepth, excFirstFragment, excShortTransport, excTransportRest, excOSPFVersion, excAHTerminal,
	excARPOther, excIPBeyondFrame}

// The reference decoder agrees with every hand-written key of the parse
// table, and each named exception is taken by at least one seed, so none is
// dead code that could hide a real difference.
func TestParseReference(t *testing.T) {
	for _, c := range parseCases(t) {
		got := referenceKey(c.pkt).key
		want := encodeKeyForTest(c.want)
		if d := keyDiff(got, want); d != "" {
			t.Errorf("%s: gopacket reference differs from the table:\n%s", c.name, d)
		}
	}
	hit := map[string][]string{}
	for _, s := range parseSeeds(t) {
		for _, e := range referenceKey(s.pkt).exceptions {
			hit[e] = append(hit[e], s.name)
		}
	}
	for _, e := range allParseExceptions {
		if len(hit[e]) == 0 {
			t.Errorf("no seed reaches exception %q", e)
		}
	}
	if len(hit) != len(allParseExceptions) {
		t.Errorf("seeds reach %d exceptions, %d are listed", len(hit), len(allParseExceptions))
	}
}

// encodeKeyForTest is the raw key of a table case (Ifindex and Direction 0).
func encodeKeyForTest(k FlowKey) bpf.FlowFlowKey {
	r := bpf.FlowFlowKey{SrcPort: k.SrcPort, DstPort: k.DstPort, EthProto: k.EtherType, VlanId: k.VLAN, IpProto: k.Proto, Flags: uint8(k.Flags)}
	if k.SrcAddr.IsValid() {
		copy(r.SrcAddr[:], k.SrcAddr.AsSlice())
		copy(r.DstAddr[:], k.DstAddr.AsSlice())
	}
	return r
}
