package core

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	v4A  = netip.MustParseAddr("192.0.2.1")
	v4B  = netip.MustParseAddr("192.0.2.2")
	v6A  = netip.MustParseAddr("2001:db8::1")
	v6B  = netip.MustParseAddr("2001:db8::2")
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for _, l := range ls {
		if n, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, nl := range ls {
				if nl, ok := nl.(gopacket.NetworkLayer); ok {
					_ = n.SetNetworkLayerForChecksum(nl)
				}
			}
		}
	}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

func eth(typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: typ}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: v4A.AsSlice(), DstIP: v4B.AsSlice()}
}

func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: v6A.AsSlice(), DstIP: v6B.AsSlice()}
}

// ext builds an IPv6 extension header of 8 bytes (hop-by-hop, routing, destination options).
func ext(next layers.IPProtocol) []byte {
	return []byte{byte(next), 0, 1, 4, 0, 0, 0, 0} // PadN option fills the 8 bytes
}

func frag6(next layers.IPProtocol, offset uint16, more bool) []byte {
	b := []byte{byte(next), 0, 0, 0, 0, 0, 0, 42}
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	return b
}

// rawEth is an Ethernet frame without the padding to 60 bytes that a
// serializer adds, for headers that must really end early.
func rawEth(typ uint16, payload ...byte) []byte {
	b := append([]byte{}, macB...)
	b = append(b, macA...)
	b = binary.BigEndian.AppendUint16(b, typ)
	return append(b, payload...)
}

func cat(parts ...[]byte) gopacket.Payload {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

type parseCase struct {
	name string
	pkt  []byte
	want FlowKey // Ifindex and Direction are filled in per program
}

// xdpOnly names the cases BPF_PROG_TEST_RUN refuses to give skb programs
// (an IPv4 frame shorter than an IP header): only XDP can be shown them.
var xdpOnly = map[string]bool{"ipv4 short ip header": true}

func parseCases(t testing.TB) []parseCase {
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true, Window: 1000}
	udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}
	icmp6 := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
	v4 := func(proto uint8, sp, dp uint16) FlowKey {
		return FlowKey{EtherType: EtherTypeIPv4, Proto: proto, SrcAddr: v4A, DstAddr: v4B, SrcPort: sp, DstPort: dp}
	}
	v6 := func(proto uint8, sp, dp uint16) FlowKey {
		return FlowKey{EtherType: EtherTypeIPv6, Proto: proto, SrcAddr: v6A, DstAddr: v6B, SrcPort: sp, DstPort: dp}
	}
	withFlags := func(k FlowKey, f Flags) FlowKey { k.Flags = f; return k }
	withVLAN := func(k FlowKey, v uint16) FlowKey { k.VLAN = v; return k }

	fragIP := ip4(layers.IPProtocolUDP)
	fragIP.FragOffset = 185
	firstFragIP := ip4(layers.IPProtocolUDP)
	firstFragIP.Flags = layers.IPv4MoreFragments
	badIHL := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp, gopacket.Payload("x"))
	badIHL[14] = 0x43 // version 4, IHL 3 (12 bytes): impossible
	shortTCP := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), gopacket.Payload{0x9c})
	shortIP := rawEth(EtherTypeIPv4, 0x45, 0, 0, 20, 0, 0)
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: 1, SourceHwAddress: macA, SourceProtAddress: v4A.AsSlice(), DstHwAddress: make([]byte, 6), DstProtAddress: v4B.AsSlice()}
	gre := []byte{0x20, 0x00, 0x08, 0x00, 0, 0, 0, 1} // key present, version 0, protocol IPv4
	esp := []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}
	ah := []byte{byte(layers.IPProtocolTCP), 4, 0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1}
	ospf := []byte{2, 1, 0, 44, 1, 1, 1, 1}
	sctp := []byte{0x0b, 0x59, 0x0b, 0x5a, 0, 0, 0, 0, 0, 0, 0, 0}
	// Cases the differential fuzzing found (parse_fuzz_test.go).
	sixExt := cat(ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolIPv6Routing), ext(layers.IPProtocolIPv6Destination),
		ext(layers.IPProtocolIPv6Fragment), frag6(layers.IPProtocolIPv6Destination, 0, false), ext(layers.IPProtocolUDP),
		[]byte{0x13, 0x88, 0x13, 0x89, 0, 12, 0, 0, 1, 2, 3, 4})
	gso := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp, gopacket.Payload("segment"))
	binary.BigEndian.PutUint16(gso[14+2:], 0)
	bigV6 := serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolUDP), udp, gopacket.Payload("q"))
	binary.BigEndian.PutUint16(bigV6[14+4:], 0xffff) // a GRO packet's length; the frame holds its head
	fragBadIHL := serialize(t, eth(layers.EthernetTypeIPv4), fragIP, gopacket.Payload("fragment data"))
	fragBadIHL[14] = 0x44
	optsPastEnd := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocol(253)), gopacket.Payload("abcdefgh"))
	optsPastEnd[14] = 0x48 // 32-byte header in a 28-byte packet
	loop := cat(ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolIPv6Destination),
		ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolIPv6Destination),
		ext(layers.IPProtocolIPv6Destination), ext(layers.IPProtocolUDP))

	return []parseCase{
		{"ipv4 tcp", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp, gopacket.Payload("hello")), v4(ProtoTCP, 40000, 443)},
		{"ipv4 udp", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp, gopacket.Payload("q")), v4(ProtoUDP, 5353, 53)},
		{"ipv4 icmp echo", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4), icmp), v4(ProtoICMP, 8, 0)},
		{"ipv4 sctp", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolSCTP), gopacket.Payload(sctp)), v4(ProtoSCTP, 2905, 2906)},
		{"ipv4 gre", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolGRE), gopacket.Payload(gre)), v4(ProtoGRE, 0x2000, 0x0800)},
		{"ipv4 esp spi", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolESP), gopacket.Payload(esp)), v4(ProtoESP, 0xdead, 0xbeef)},
		{"ipv4 ah spi", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolAH), gopacket.Payload(ah)), v4(ProtoAH, 0x1234, 0x5678)},
		{"ipv4 ospf hello", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolOSPF), gopacket.Payload(ospf)), v4(ProtoOSPF, 2, 1)},
		{"ipv4 other protocol", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocol(253)), gopacket.Payload("xyz")), v4(253, 0, 0)},
		{"ipv4 first fragment", serialize(t, eth(layers.EthernetTypeIPv4), firstFragIP, udp, gopacket.Payload("a")), v4(ProtoUDP, 5353, 53)},
		{"ipv4 later fragment", serialize(t, eth(layers.EthernetTypeIPv4), fragIP, gopacket.Payload("\x13\x89\x00\x35data")), withFlags(v4(ProtoUDP, 0, 0), FlagFragment)},
		{"ipv4 bad ihl", badIHL, withFlags(v4(ProtoTCP, 0, 0), FlagTruncated)},
		{"ipv4 short tcp header", shortTCP, withFlags(v4(ProtoTCP, 0, 0), FlagTruncated)},
		{"ipv4 short ip header", shortIP, FlowKey{EtherType: EtherTypeIPv4, Flags: FlagTruncated}},
		{"802.1q ipv4 tcp", serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv4}, ip4(layers.IPProtocolTCP), tcp), withVLAN(v4(ProtoTCP, 40000, 443), 100)},
		{"802.1ad+802.1q ipv6 udp", serialize(t, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv6}, ip6(layers.IPProtocolUDP), udp), withVLAN(v6(ProtoUDP, 5353, 53), 300)},
		{"ipv6 tcp", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp), v6(ProtoTCP, 40000, 443)},
		{"ipv6 icmpv6 echo", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolICMPv6), icmp6, gopacket.Payload("\x00\x01\x00\x01")), v6(ProtoICMPv6, 128, 0)},
		{"ipv6 4 extension headers then udp", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop),
			cat(ext(layers.IPProtocolIPv6Routing), ext(layers.IPProtocolIPv6Destination), frag6(layers.IPProtocolIPv6Destination, 0, true), ext(layers.IPProtocolUDP),
				[]byte{0x13, 0x88, 0x13, 0x89, 0, 12, 0, 0, 1, 2, 3, 4})), v6(ProtoUDP, 5000, 5001)},
		{"ipv6 later fragment", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Fragment), cat(frag6(layers.IPProtocolUDP, 100, false), []byte{1, 2, 3, 4, 5, 6, 7, 8})),
			withFlags(v6(ProtoUDP, 0, 0), FlagFragment)},
		{"ipv6 extension header loop", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Destination), loop),
			withFlags(v6(60, 0, 0), FlagTruncated)},
		{"ipv6 truncated extension header", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop), gopacket.Payload{6}),
			withFlags(v6(0, 0, 0), FlagTruncated)},
		{"ipv4 padded frame: padding is not a tcp header", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), gopacket.Payload{0x9c}),
			withFlags(v4(ProtoTCP, 0, 0), FlagTruncated)},
		{"ipv6 esp", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolESP), gopacket.Payload(esp)), v6(ProtoESP, 0xdead, 0xbeef)},
		{"arp request", serialize(t, eth(layers.EthernetTypeARP), arp), FlowKey{EtherType: EtherTypeARP, SrcAddr: v4A, DstAddr: v4B, DstPort: 1}},
		{"truncated arp", rawEth(EtherTypeARP, 0, 1, 8), FlowKey{EtherType: EtherTypeARP, Flags: FlagTruncated}},
		{"lldp (unknown ethertype)", serialize(t, eth(0x88cc), gopacket.Payload("lldp-body-bytes")), FlowKey{EtherType: 0x88cc}},
		{"vlan tag cut short", rawEth(0x8100, 0x00), FlowKey{EtherType: 0x8100, Flags: FlagTruncated}},
		{"ipv6 six extension headers then udp", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6HopByHop), sixExt), v6(ProtoUDP, 5000, 5001)},
		{"ipv6 extension header longer than the packet", serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Destination), gopacket.Payload{59, 1, 1, 4, 0, 0, 0, 0}),
			withFlags(v6(60, 0, 0), FlagTruncated)},
		{"ipv6 payload length above 65495", bigV6, v6(ProtoUDP, 5353, 53)},
		{"ipv4 total length 0 (gso)", gso, v4(ProtoTCP, 40000, 443)},
		{"ipv4 later fragment with a bad ihl", fragBadIHL, withFlags(v4(ProtoUDP, 0, 0), FlagFragment|FlagTruncated)},
		{"ipv4 options past the packet, port-less protocol", optsPastEnd, withFlags(v4(253, 0, 0), FlagTruncated)},
	}
}

// runTimes runs prog on pkt n times, one packet per BPF_PROG_TEST_RUN. A run
// with Repeat > 1 can be interrupted by a signal and is then retried from
// the start, while the map updates of the interrupted part stay: counts
// would come out too high.
func runTimes(t testing.TB, prog *ebpf.Program, pkt []byte, n int) uint32 {
	t.Helper()
	var ret uint32
	for i := 0; i < n; i++ {
		var err error
		if ret, err = prog.Run(&ebpf.RunOptions{Data: pkt}); err != nil {
			t.Fatalf("run: %v", err)
		}
	}
	return ret
}

// loadFlowForTest loads the TC/XDP object with a small flow table.
func loadFlowForTest(t testing.TB, maxFlows uint32) *bpf.FlowObjects {
	t.Helper()
	nettest.RequireBPF(t)
	spec, err := bpf.LoadFlow()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[bpf.FlowMapFlows].MaxEntries = maxFlows
	var objs bpf.FlowObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { objs.Close() })
	return &objs
}

// flowEntry is one flow table entry with its per-CPU values merged.
type flowEntry struct {
	packets, bytes uint64
	app            uint8
}

// flowEntries returns every entry of the flow table under its raw key.
func flowEntries(t testing.TB, m *ebpf.Map) map[bpf.FlowFlowKey]flowEntry {
	t.Helper()
	out := map[bpf.FlowFlowKey]flowEntry{}
	var k bpf.FlowFlowKey
	vals := make([]counters, lanesOf(t, m))
	it := m.Iterate()
	for it.Next(&k, &vals) {
		p, b, _ := sum(vals)
		out[k] = flowEntry{p, b, mergeAppProto(vals)}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// dumpFlows returns every entry of the flow table with per-CPU values summed.
func dumpFlows(t testing.TB, m *ebpf.Map) map[FlowKey][2]uint64 {
	t.Helper()
	out := map[FlowKey][2]uint64{}
	for k, e := range flowEntries(t, m) {
		out[decodeKey(k)] = [2]uint64{e.packets, e.bytes}
	}
	return out
}

func clearMap(t testing.TB, m *ebpf.Map) {
	t.Helper()
	var k bpf.FlowFlowKey
	var keys []bpf.FlowFlowKey
	it := m.Iterate()
	vals := make([]counters, lanesOf(t, m))
	for it.Next(&k, &vals) {
		keys = append(keys, k)
	}
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil {
			t.Fatal(err)
		}
	}
}

// Every packet is counted once under exactly the key its headers give, in
// both TC directions and XDP, malformed ones included.
func TestParsePrograms(t *testing.T) {
	objs := loadFlowForTest(t, 1024)
	progs := []struct {
		name string
		prog *ebpf.Program
		dir  Direction
		ret  uint32
	}{
		{"tc_ingress", objs.TcIngress, Ingress, ^uint32(0)}, // TC_ACT_UNSPEC
		{"tc_egress", objs.TcEgress, Egress, ^uint32(0)},
		{"xdp_ingress", objs.XdpIngress, Ingress, 2}, // XDP_PASS
	}
	for _, tc := range parseCases(t) {
		for _, p := range progs {
			if xdpOnly[tc.name] && p.name != "xdp_ingress" {
				continue
			}
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				clearMap(t, objs.Flows)
				ret := runTimes(t, p.prog, tc.pkt, 3)
				if ret != p.ret {
					t.Errorf("returned %d, want %d (the program must never drop or redirect)", int32(ret), int32(p.ret))
				}
				got := dumpFlows(t, objs.Flows)
				if len(got) != 1 {
					t.Fatalf("want exactly one flow, got %d: %+v", len(got), got)
				}
				for k, v := range got {
					want := tc.want
					want.Ifindex, want.Direction = k.Ifindex, p.dir
					if k != want {
						t.Errorf("key\n got %+v\nwant %+v", k, want)
					}
					if k.Ifindex == 0 {
						t.Errorf("ifindex is 0")
					}
					if v != [2]uint64{3, uint64(3 * len(tc.pkt))} {
						t.Errorf("counters = %v, want 3 packets, %d bytes", v, 3*len(tc.pkt))
					}
				}
			})
		}
	}
}

// A full table sends new flows to the overflow entry of their interface and
// direction; no packet is lost from the totals.
func TestOverflowConservesTotals(t *testing.T) {
	const maxFlows = 16
	objs := loadFlowForTest(t, maxFlows)
	var sent, sentBytes uint64
	for i := 0; i < 100; i++ {
		pkt := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP),
			&layers.UDP{SrcPort: layers.UDPPort(10000 + i), DstPort: 53}, gopacket.Payload(make([]byte, i)))
		runTimes(t, objs.TcEgress, pkt, 2)
		sent += 2
		sentBytes += 2 * uint64(len(pkt))
	}
	var flowPkts, flowBytes uint64
	flows := dumpFlows(t, objs.Flows)
	for _, v := range flows {
		flowPkts += v[0]
		flowBytes += v[1]
	}
	var ovPkts, ovBytes uint64
	var ok bpf.FlowOverflowKey
	var vals []counters
	it := objs.FlowsOverflow.Iterate()
	n := 0
	for it.Next(&ok, &vals) {
		n++
		p, b, _ := sum(vals)
		ovPkts += p
		ovBytes += b
		if ok.Direction != uint8(Egress) || ok.Ifindex == 0 {
			t.Errorf("overflow key %+v, want egress on a real ifindex", ok)
		}
	}
	if len(flows) != maxFlows || n != 1 {
		t.Errorf("got %d flows and %d overflow entries, want %d and 1", len(flows), n, maxFlows)
	}
	if flowPkts+ovPkts != sent || flowBytes+ovBytes != sentBytes {
		t.Errorf("flows %d/%dB + overflow %d/%dB != sent %d/%dB", flowPkts, flowBytes, ovPkts, ovBytes, sent, sentBytes)
	}
	if ovPkts != 2*(100-maxFlows) {
		t.Errorf("overflow packets = %d, want %d", ovPkts, 2*(100-maxFlows))
	}

	// With the overflow table full as well, the last-resort total counts.
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(0); i < objs.FlowsOverflow.MaxEntries(); i++ {
		k := bpf.FlowOverflowKey{Ifindex: 100000 + i}
		_ = objs.FlowsOverflow.Update(&k, make([]counters, ncpu), ebpf.UpdateNoExist)
	}
	pkt := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 9, DstPort: 9})
	runTimes(t, objs.TcIngress, pkt, 5)
	var zero uint32
	if err := objs.FlowsOverflowTotal.Lookup(&zero, &vals); err != nil {
		t.Fatal(err)
	}
	if p, b, start := sum(vals); p != 5 || b != uint64(5*len(pkt)) || start == 0 {
		t.Errorf("last-resort total %d packets %d bytes start %d, want 5, %d and a start time", p, b, start, 5*len(pkt))
	}
}
