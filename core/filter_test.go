package core

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

func TestFiltersValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Filters
		want string // the whole error; empty means valid
	}{
		{"no keys", Filters{}, ""},
		{"every kind", Filters{IncludeCIDRs: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"}, ExcludeCIDRs: []string{"10.1.0.0/16"},
			IncludeProtocols: []string{"tcp", "udp", "arp", "other", "253"}, ExcludeProtocols: []string{"ipv6-icmp"},
			IncludePorts: []string{"53", "30000-32767", "0", "65535"}, ExcludePorts: []string{"32000"}}, ""},
		{"host bits", Filters{ExcludeCIDRs: []string{"10.1.2.3/8"}}, `exclude_cidrs "10.1.2.3/8" has host bits set: write "10.0.0.0/8"`},
		{"host bits v6", Filters{IncludeCIDRs: []string{"2001:db8::1/64"}}, `include_cidrs "2001:db8::1/64" has host bits set: write "2001:db8::/64"`},
		{"not a cidr", Filters{IncludeCIDRs: []string{"10.0.0.0/33"}}, `include_cidrs "10.0.0.0/33" is not a CIDR: write it like "10.0.0.0/8" or "2001:db8::/32"`},
		{"unknown protocol", Filters{IncludeProtocols: []string{"TCP"}}, `include_protocols "TCP" is not a protocol: use a lower-case IANA keyword as in the proto tag (tcp, udp, icmp, ipv6-icmp, gre, esp, sctp, ...), an IP protocol number 0-255, arp, or other (any other non-IP protocol)`},
		{"protocol number too large", Filters{ExcludeProtocols: []string{"256"}}, `exclude_protocols "256" is not a protocol: use a lower-case IANA keyword as in the proto tag (tcp, udp, icmp, ipv6-icmp, gre, esp, sctp, ...), an IP protocol number 0-255, arp, or other (any other non-IP protocol)`},
		{"port out of range", Filters{IncludePorts: []string{"65536"}}, `include_ports "65536" is out of range: 65536 is not in [0, 65535]`},
		{"range end out of range", Filters{ExcludePorts: []string{"1000-70000"}}, `exclude_ports "1000-70000" is out of range: 70000 is not in [0, 65535]`},
		{"negative port", Filters{ExcludePorts: []string{"-1"}}, `exclude_ports "-1" is not a port or range: write a number like "443" or a range like "30000-32767"`},
		{"port name", Filters{IncludePorts: []string{"http"}}, `include_ports "http" is not a port or range: write a number like "443" or a range like "30000-32767"`},
		{"empty range", Filters{IncludePorts: []string{"2000-1000"}}, `include_ports "2000-1000" is an empty range: write the lower port first, like "1000-2000"`},
		{"cidrs leave nothing", Filters{IncludeCIDRs: []string{"10.1.0.0/16", "10.2.0.0/16"}, ExcludeCIDRs: []string{"10.0.0.0/8"}},
			`include_cidrs ["10.1.0.0/16", "10.2.0.0/16"] and exclude_cidrs ["10.0.0.0/8"] leave nothing: every included prefix is inside an excluded one`},
		{"other family is left", Filters{IncludeCIDRs: []string{"10.1.0.0/16", "2001:db8::/32"}, ExcludeCIDRs: []string{"10.0.0.0/8"}}, ""},
		{"protocols leave nothing", Filters{IncludeProtocols: []string{"tcp"}, ExcludeProtocols: []string{"tcp", "udp"}},
			`include_protocols ["tcp"] and exclude_protocols ["tcp", "udp"] leave nothing: every included protocol is also excluded`},
		{"ports leave nothing", Filters{IncludePorts: []string{"80-90"}, ExcludePorts: []string{"0-100"}},
			`include_ports ["80-90"] and exclude_ports ["0-100"] leave nothing: every included port is also excluded`},
		{"cidrs with only non-ip protocols", Filters{IncludeCIDRs: []string{"10.0.0.0/8"}, IncludeProtocols: []string{"other"}},
			`include_cidrs ["10.0.0.0/8"] leaves nothing with the protocol filters: protocol "other" has no addresses; keep an IP protocol or arp, or remove include_cidrs`},
		{"ports without a protocol that has them", Filters{IncludePorts: []string{"53"}, IncludeProtocols: []string{"icmp"}},
			`include_ports ["53"] leaves nothing with the protocol filters: only tcp, udp, udplite and sctp have ports; keep one of them or remove include_ports`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Config{Filters: tc.f}.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no error, want %q", tc.want)
			case tc.want != "" && err.Error() != tc.want:
				t.Fatalf("error\n got %q\nwant %q", err, tc.want)
			}
		})
	}
	err := Config{Mode: ModeKprobe, Filters: Filters{ExcludePorts: []string{"22"}}}.Validate()
	if want := `exclude_ports is set but mode is "kprobe": filters run in the tc, xdp and cgroup programs; remove the filter keys or use one of those modes`; err == nil || err.Error() != want {
		t.Errorf("kprobe mode with a filter: %v, want %q", err, want)
	}
}

// Each prefix of the trie carries the bits of the shorter prefixes around
// it, because the kernel looks up only the longest match.
func TestFilterCIDRAncestors(t *testing.T) {
	ft, err := Filters{IncludeCIDRs: []string{"10.0.0.0/8", "10.1.2.0/24"}, ExcludeCIDRs: []string{"10.1.0.0/16", "2001:db8::/32"}}.compile()
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]uint8{
		netip.MustParsePrefix("10.0.0.0/8"):    filterIn,
		netip.MustParsePrefix("10.1.0.0/16"):   filterIn | filterOut,
		netip.MustParsePrefix("10.1.2.0/24"):   filterIn | filterOut,
		netip.MustParsePrefix("2001:db8::/32"): filterOut,
	}
	if len(ft.cidrs) != len(want) {
		t.Fatalf("trie entries %v, want %v", ft.cidrs, want)
	}
	for p, bits := range want {
		if ft.cidrs[p] != bits {
			t.Errorf("%s: bits %b, want %b", p, ft.cidrs[p], bits)
		}
	}
	if ft.enabled != filterCIDRs || ft.hasIn != filterCIDRs || ft.hasOut != filterCIDRs {
		t.Errorf("knobs enabled=%b has_in=%b has_out=%b, want all %b", ft.enabled, ft.hasIn, ft.hasOut, filterCIDRs)
	}
}

// loadFilteredForTest loads the TC/XDP and cgroup objects with f applied the
// way the collector applies it.
func loadFilteredForTest(t *testing.T, f Filters) (*bpf.FlowObjects, *bpf.CgroupObjects) {
	t.Helper()
	nettest.RequireBPF(t)
	fspec, err := bpf.LoadFlow()
	if err != nil {
		t.Fatal(err)
	}
	cspec, err := bpf.LoadCgroup()
	if err != nil {
		t.Fatal(err)
	}
	var fo bpf.FlowObjects
	var co bpf.CgroupObjects
	fspec.Maps[bpf.FlowMapFlows].MaxEntries = 64
	cspec.Maps[bpf.CgroupMapCgroupFlows].MaxEntries = 64
	var fills []func(cidrs, protos, ports *ebpf.Map) error
	for _, o := range []struct {
		spec *ebpf.CollectionSpec
		objs interface{ Close() error }
	}{{fspec, &fo}, {cspec, &co}} {
		fill, err := ApplyFilters(o.spec, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.spec.LoadAndAssign(o.objs, nil); err != nil {
			t.Fatalf("load: %v", err)
		}
		t.Cleanup(func() { o.objs.Close() })
		fills = append(fills, fill)
	}
	if err := fills[0](fo.FilterCidrs, fo.FilterProtos, fo.FilterPorts); err != nil {
		t.Fatal(err)
	}
	if err := fills[1](co.FilterCidrs, co.FilterProtos, co.FilterPorts); err != nil {
		t.Fatal(err)
	}
	return &fo, &co
}

// mapTotals sums every entry of a per-CPU map whose values are flow_counters.
func mapTotals(t *testing.T, m *ebpf.Map) (entries int, packets, bytes uint64) {
	t.Helper()
	key := make([]byte, m.KeySize())
	vals := make([]counters, lanesOf(t, m))
	it := m.Iterate()
	for it.Next(&key, &vals) {
		p, b, _ := sum(vals)
		entries++
		packets += p
		bytes += b
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return entries, packets, bytes
}

func filteredKeys(t *testing.T, m *ebpf.Map) []bpf.FlowOverflowKey {
	t.Helper()
	var k bpf.FlowOverflowKey
	vals := make([]counters, lanesOf(t, m))
	var out []bpf.FlowOverflowKey
	it := m.Iterate()
	for it.Next(&k, &vals) {
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func clearAll(t *testing.T, ms ...*ebpf.Map) {
	t.Helper()
	for _, m := range ms {
		key := make([]byte, m.KeySize())
		var keys [][]byte
		vals := make([]counters, lanesOf(t, m))
		it := m.Iterate()
		for it.Next(&key, &vals) {
			keys = append(keys, append([]byte(nil), key...))
		}
		for _, k := range keys {
			if err := m.Delete(k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// filterPkt builds a frame between two addresses of one family: udp, tcp,
// sctp or icmp (echo) with the given ports, or a later udp fragment.
func filterPkt(t *testing.T, proto string, src, dst string, sport, dport uint16) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var l3 gopacket.SerializableLayer
	ethType := layers.EthernetTypeIPv4
	var ipProto layers.IPProtocol
	switch proto {
	case "udp", "fragment":
		ipProto = layers.IPProtocolUDP
	case "tcp":
		ipProto = layers.IPProtocolTCP
	case "sctp":
		ipProto = layers.IPProtocolSCTP
	case "icmp":
		ipProto = layers.IPProtocolICMPv4
		if s.Is6() {
			ipProto = layers.IPProtocolICMPv6
		}
	}
	var nl gopacket.NetworkLayer
	if s.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: ipProto, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		if proto == "fragment" {
			ip.FragOffset = 185
		}
		l3, nl = ip, ip
	} else {
		ethType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: ipProto, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		l3, nl = ip, ip
	}
	var l4 gopacket.SerializableLayer
	switch proto {
	case "udp":
		u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		_ = u.SetNetworkLayerForChecksum(nl)
		l4 = u
	case "tcp":
		tc := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), ACK: true, Window: 100}
		_ = tc.SetNetworkLayerForChecksum(nl)
		l4 = tc
	case "sctp":
		l4 = gopacket.Payload{byte(sport >> 8), byte(sport), byte(dport >> 8), byte(dport), 0, 0, 0, 0, 0, 0, 0, 0}
	case "icmp":
		if s.Is4() {
			l4 = &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}
		} else {
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
			_ = ic.SetNetworkLayerForChecksum(nl)
			l4 = ic
		}
	case "fragment":
		l4 = gopacket.Payload{0, 53, 0, 53, 0, 0, 0, 0}
	}
	return serialize(t, eth(ethType), l3, l4, gopacket.Payload("payload"))
}

func arpPkt(t *testing.T, src, dst string) []byte {
	a := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: 1, SourceHwAddress: macA, SourceProtAddress: netip.MustParseAddr(src).AsSlice(), DstHwAddress: make([]byte, 6),
		DstProtAddress: netip.MustParseAddr(dst).AsSlice()}
	return serialize(t, eth(layers.EthernetTypeARP), a)
}

// Every packet goes to exactly one map: the flow table when the filters
// keep it, the filtered total of its interface and direction when they do
// not; every program still passes it on. Run in the TC, XDP and cgroup
// programs.
func TestFilterPrograms(t *testing.T) {
	type pktCase struct {
		name string
		pkt  []byte
		keep bool
	}
	lldp := serialize(t, eth(0x88cc), gopacket.Payload("lldp-body-bytes"))
	_, probe := loadFilteredForTest(t, Filters{})
	cgroupSeesData := cgroupTestRunSeesData(t, probe)
	for _, cfg := range []struct {
		name  string
		f     Filters
		cases []pktCase
	}{
		{"nested cidrs", Filters{IncludeCIDRs: []string{"10.0.0.0/8", "2001:db8::/32", "10.1.2.0/24"}, ExcludeCIDRs: []string{"10.1.0.0/16", "2001:db8:1::/48"}}, []pktCase{
			{"v4 src included", filterPkt(t, "udp", "10.2.0.1", "192.0.2.9", 1, 2), true},
			{"v4 dst included", filterPkt(t, "udp", "192.0.2.9", "10.2.0.1", 1, 2), true},
			{"v4 last address of the /8", filterPkt(t, "tcp", "10.255.255.255", "192.0.2.9", 1, 2), true},
			{"v4 first address after the /8", filterPkt(t, "tcp", "11.0.0.0", "192.0.2.9", 1, 2), false},
			{"v4 inside the nested exclude", filterPkt(t, "udp", "10.1.0.5", "192.0.2.9", 1, 2), false},
			{"v4 include nested in the exclude", filterPkt(t, "udp", "10.1.2.3", "192.0.2.9", 1, 2), false},
			{"v4 one address excluded", filterPkt(t, "udp", "10.2.0.1", "10.1.255.255", 1, 2), false},
			{"v4 outside every include", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 1, 2), false},
			{"v6 included", filterPkt(t, "udp", "2001:db8:2::1", "2001:db9::1", 1, 2), true},
			{"v6 inside the nested exclude", filterPkt(t, "tcp", "2001:db9::1", "2001:db8:1:ffff::1", 1, 2), false},
			{"v6 outside every include", filterPkt(t, "icmp", "2001:db9::1", "2001:dba::1", 0, 0), false},
			{"v6 address with v4 included bytes", filterPkt(t, "udp", "a00:1::", "a00:2::", 1, 2), false},
			{"arp inside", arpPkt(t, "10.2.0.1", "10.2.0.2"), true},
			{"arp outside", arpPkt(t, "192.0.2.1", "192.0.2.2"), false},
			{"no addresses", lldp, false},
		}},
		{"exclude cidr only", Filters{ExcludeCIDRs: []string{"192.0.2.128/25"}}, []pktCase{
			{"last address before", filterPkt(t, "udp", "192.0.2.127", "198.51.100.1", 1, 2), true},
			{"first address in", filterPkt(t, "udp", "198.51.100.1", "192.0.2.128", 1, 2), false},
			{"last address in", filterPkt(t, "udp", "192.0.2.255", "198.51.100.1", 1, 2), false},
			{"v6", filterPkt(t, "udp", "2001:db8::1", "2001:db8::2", 1, 2), true},
			{"no addresses", lldp, true},
		}},
		{"protocols", Filters{IncludeProtocols: []string{"tcp", "udp", "arp"}, ExcludeProtocols: []string{"udp"}}, []pktCase{
			{"v4 tcp", filterPkt(t, "tcp", "192.0.2.1", "192.0.2.2", 1, 2), true},
			{"v6 tcp", filterPkt(t, "tcp", "2001:db8::1", "2001:db8::2", 1, 2), true},
			{"v4 udp excluded", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 1, 2), false},
			{"v6 udp excluded", filterPkt(t, "udp", "2001:db8::1", "2001:db8::2", 1, 2), false},
			{"icmp not included", filterPkt(t, "icmp", "192.0.2.1", "192.0.2.2", 0, 0), false},
			{"arp", arpPkt(t, "192.0.2.1", "192.0.2.2"), true},
			{"other not included", lldp, false},
		}},
		{"exclude protocols", Filters{ExcludeProtocols: []string{"other", "ipv6-icmp", "132"}}, []pktCase{
			{"v4 tcp", filterPkt(t, "tcp", "192.0.2.1", "192.0.2.2", 1, 2), true},
			{"v4 icmp", filterPkt(t, "icmp", "192.0.2.1", "192.0.2.2", 0, 0), true},
			{"v6 icmp", filterPkt(t, "icmp", "2001:db8::1", "2001:db8::2", 0, 0), false},
			{"sctp by number", filterPkt(t, "sctp", "192.0.2.1", "192.0.2.2", 1, 2), false},
			{"arp", arpPkt(t, "192.0.2.1", "192.0.2.2"), true},
			{"other", lldp, false},
		}},
		{"port ranges", Filters{IncludePorts: []string{"53", "30000-32767"}, ExcludePorts: []string{"32000"}}, []pktCase{
			{"dst port", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 40000, 53), true},
			{"src port", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 53, 40000), true},
			{"below the range", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 40000, 29999), false},
			{"range start", filterPkt(t, "tcp", "192.0.2.1", "192.0.2.2", 40000, 30000), true},
			{"range end v6", filterPkt(t, "tcp", "2001:db8::1", "2001:db8::2", 40000, 32767), true},
			{"past the range v6", filterPkt(t, "udp", "2001:db8::1", "2001:db8::2", 40000, 32768), false},
			{"excluded inside the range", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 40000, 32000), false},
			{"one port excluded", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 32000, 53), false},
			{"sctp", filterPkt(t, "sctp", "192.0.2.1", "192.0.2.2", 40000, 53), true},
			{"icmp has no ports", filterPkt(t, "icmp", "192.0.2.1", "192.0.2.2", 0, 0), false},
			{"later fragment has no ports", filterPkt(t, "fragment", "192.0.2.1", "192.0.2.2", 0, 0), false},
			{"arp has no ports", arpPkt(t, "192.0.2.1", "192.0.2.2"), false},
		}},
		{"exclude ports at the edges", Filters{ExcludePorts: []string{"0-1023", "65535"}}, []pktCase{
			{"port 0", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 40000, 0), false},
			{"port 1023", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 1023, 40000), false},
			{"port 1024", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 40000, 1024), true},
			{"port 65534", filterPkt(t, "tcp", "2001:db8::1", "2001:db8::2", 65534, 40000), true},
			{"port 65535", filterPkt(t, "tcp", "2001:db8::1", "2001:db8::2", 40000, 65535), false},
			{"icmp", filterPkt(t, "icmp", "192.0.2.1", "192.0.2.2", 0, 0), true},
		}},
		{"every kind", Filters{IncludeCIDRs: []string{"192.0.2.0/24"}, ExcludePorts: []string{"7003"}, ExcludeProtocols: []string{"icmp"}}, []pktCase{
			{"kept", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 40000, 7001), true},
			{"only the destination inside", filterPkt(t, "udp", "198.51.100.1", "192.0.2.2", 40000, 7001), true},
			{"only the source inside", filterPkt(t, "tcp", "192.0.2.2", "198.51.100.1", 7001, 40000), true},
			{"port excluded", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 40000, 7003), false},
			{"protocol excluded", filterPkt(t, "icmp", "192.0.2.1", "192.0.2.2", 0, 0), false},
			{"outside the cidr", filterPkt(t, "udp", "2001:db8::1", "2001:db8::2", 40000, 7001), false},
		}},
		{"no keys", Filters{}, []pktCase{
			{"v4", filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 1, 2), true},
			{"other", lldp, true},
		}},
	} {
		fo, co := loadFilteredForTest(t, cfg.f)
		progs := []struct {
			name            string
			prog            *ebpf.Program
			flows, filtered *ebpf.Map
			dir             Direction
			ret             uint32
			l3              bool
		}{
			{"tc_ingress", fo.TcIngress, fo.Flows, fo.FlowsFiltered, Ingress, ^uint32(0), false},
			{"tc_egress", fo.TcEgress, fo.Flows, fo.FlowsFiltered, Egress, ^uint32(0), false},
			{"xdp_ingress", fo.XdpIngress, fo.Flows, fo.FlowsFiltered, Ingress, 2, false},
			{"cgroup_ingress", co.CgroupIngress, co.CgroupFlows, co.FlowsFiltered, Ingress, 1, true},
			{"cgroup_egress", co.CgroupEgress, co.CgroupFlows, co.FlowsFiltered, Egress, 1, true},
		}
		for _, pc := range cfg.cases {
			for _, p := range progs {
				if p.l3 && pc.pkt[12] == 0x08 && pc.pkt[13] == 0x06 {
					// cgroup_skb sees IP packets only.
					continue
				}
				t.Run(cfg.name+"/"+pc.name+"/"+p.name, func(t *testing.T) {
					if p.l3 && !cgroupSeesData {
						skipLacking(t, "cgroup_test_run_data", "this kernel's BPF_PROG_TEST_RUN gives cgroup_skb programs no packet data (seen on 6.1): probed with an IPv4 packet whose addresses did not reach the flow key; TestCgroupFiltersOnRealTraffic covers cgroup filters on real traffic")
					}
					clearAll(t, p.flows, p.filtered)
					if ret := runTimes(t, p.prog, pc.pkt, 3); ret != p.ret {
						t.Errorf("returned %d, want %d: a filter must not drop the packet", int32(ret), int32(p.ret))
					}
					size := uint64(len(pc.pkt))
					if p.l3 {
						size -= 14
					}
					want := [2][3]uint64{{1, 3, 3 * size}, {0, 0, 0}} // flow table, filtered total
					if !pc.keep {
						want[0], want[1] = want[1], want[0]
					}
					var got [2][3]uint64
					for i, m := range []*ebpf.Map{p.flows, p.filtered} {
						n, pk, b := mapTotals(t, m)
						got[i] = [3]uint64{uint64(n), pk, b}
					}
					if got != want {
						t.Fatalf("flow table and filtered total (entries, packets, bytes) = %v, want %v", got, want)
					}
					if !pc.keep {
						k := filteredKeys(t, p.filtered)[0]
						if k.Direction != uint8(p.dir) || k.Ifindex == 0 {
							t.Errorf("filtered key %+v, want direction %d on a real ifindex", k, p.dir)
						}
					}
				})
			}
		}
	}
}

// cgroupTestRunSeesData probes whether BPF_PROG_TEST_RUN lets cgroup_skb
// programs read the packet: it runs cgroup_egress, loaded without filters,
// on one IPv4 packet and looks for its source address in the flow key.
func cgroupTestRunSeesData(t *testing.T, co *bpf.CgroupObjects) bool {
	t.Helper()
	pkt := filterPkt(t, "udp", "192.0.2.1", "192.0.2.2", 1, 2)
	runTimes(t, co.CgroupEgress, pkt, 1)
	var k bpf.CgroupCgroupFlowKey
	vals := make([]counters, lanesOf(t, co.CgroupFlows))
	it := co.CgroupFlows.Iterate()
	seen := false
	for it.Next(&k, &vals) {
		if decodeKey(bpf.FlowFlowKey(k.Flow)).SrcAddr == v4A {
			seen = true
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if seen {
		checkNotDeclaredLacking(t, "cgroup_test_run_data")
	}
	return seen
}

// With no filter key the check is dead code that the verifier removes: the
// program the kernel runs is shorter than with filters configured.
func TestNoFilterIsPruned(t *testing.T) {
	none, _ := loadFilteredForTest(t, Filters{})
	all, _ := loadFilteredForTest(t, Filters{IncludeCIDRs: []string{"192.0.2.0/24"}, ExcludeProtocols: []string{"icmp"}, ExcludePorts: []string{"22"}})
	xlated := func(p *ebpf.Program) int {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, err := info.Instructions()
		if err != nil {
			t.Fatalf("read translated program (needs CAP_SYS_ADMIN): %v", err)
		}
		return len(insns)
	}
	for _, p := range []struct {
		name      string
		none, all *ebpf.Program
	}{{"tc_egress", none.TcEgress, all.TcEgress}, {"xdp_ingress", none.XdpIngress, all.XdpIngress}} {
		n, a := xlated(p.none), xlated(p.all)
		if n >= a {
			t.Errorf("%s: %d instructions without filters, %d with: the unused check was not removed", p.name, n, a)
		}
		t.Logf("%s: %d instructions without filters, %d with", p.name, n, a)
	}
}

// Real traffic through a veth with an exclude of one port and an include of
// one CIDR: the kept flow is exact, the filtered series holds exactly the
// rest, and together they equal the veth's counters.
func TestFiltersOnRealTraffic(t *testing.T) {
	for _, tc := range []struct {
		mode    Mode
		xdpMode string
		fromB   bool
	}{
		{ModeTC, "", false},
		{ModeTC, "", true},
		{ModeXDP, XDPGeneric, true},
	} {
		t.Run(string(tc.mode)+map[bool]string{false: "/a-to-b", true: "/b-to-a"}[tc.fromB], func(t *testing.T) {
			p := nettest.NewPair(t)
			c := startCollector(t, Config{Mode: tc.mode, XDPMode: tc.xdpMode, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(),
				Filters: Filters{IncludeCIDRs: []string{"192.0.2.0/24"}, ExcludePorts: []string{"7003"}}})
			before := p.LinkStats(t, p.NSA, p.IfA)
			send, dir := p.SendUDP, Egress
			if tc.fromB {
				send, dir = p.SendUDPFromB, Ingress
			}
			const kept, excludedPort, outsideCIDR = 120, 70, 50
			const size = 200
			send(t, kept, size, 40001, 7001, false)
			send(t, excludedPort, size, 40002, 7003, false)
			send(t, outsideCIDR, size, 40003, 7001, true)
			s := read(t, c)
			link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)

			frame4, frame6 := uint64(nettest.UDPFrameLen(size, false)), uint64(nettest.UDPFrameLen(size, true))
			flows, filtered := splitFiltered(s)
			if len(flows) != 1 {
				t.Fatalf("want exactly the one kept flow, got %d: %+v", len(flows), flows)
			}
			f := flows[0]
			if f.DstPort != 7001 || f.SrcPort != 40001 || f.IPVersion() != 4 || f.Direction != dir || f.Overflow {
				t.Errorf("kept flow %+v, want udp 40001 -> 7001 over ipv4, %s", f.FlowKey, dir)
			}
			if f.Packets != kept || f.Bytes != kept*frame4 {
				t.Errorf("kept flow %d packets %d bytes, want %d and %d", f.Packets, f.Bytes, kept, kept*frame4)
			}
			var fp, fb uint64
			for _, r := range filtered {
				if r.Interface != p.IfA || r.Overflow || r.SrcAddr.IsValid() || r.Proto != 0 {
					t.Errorf("filtered record %+v on %q: want only interface and direction", r.FlowKey, r.Interface)
				}
				if r.Direction == dir {
					fp += r.Packets
					fb += r.Bytes
				}
			}
			// The filtered series holds the two left-out flows, plus any
			// packet the kernel sent on its own in this direction (an IPv6
			// MLD report, outside the included CIDR), which the veth
			// counted beyond what the test sent.
			linkP, linkB := link.TxPackets, link.TxBytes
			if dir == Ingress {
				linkP, linkB = link.RxPackets, link.RxBytes
			}
			sentP := uint64(kept + excludedPort + outsideCIDR)
			sentB := (kept+excludedPort)*frame4 + outsideCIDR*frame6
			if linkP < sentP || linkP-sentP > 4 {
				t.Fatalf("veth counted %d packets %s, the test sent %d", linkP, dir, sentP)
			}
			wantP, wantB := uint64(excludedPort+outsideCIDR)+linkP-sentP, excludedPort*frame4+outsideCIDR*frame6+linkB-sentB
			if fp != wantP || fb != wantB {
				t.Errorf("filtered %s: %d packets %d bytes, want %d and %d (%d packets not sent by the test)", dir, fp, fb, wantP, wantB, linkP-sentP)
			}
			ip, ib := totals(s, Ingress)
			if tc.mode == ModeTC {
				ep, eb := totals(s, Egress)
				if ep != link.TxPackets || eb != link.TxBytes {
					t.Errorf("egress: all series %d packets %d bytes, veth tx %d and %d", ep, eb, link.TxPackets, link.TxBytes)
				}
			}
			if ip != link.RxPackets || ib != link.RxBytes {
				t.Errorf("ingress: all series %d packets %d bytes, veth rx %d and %d", ip, ib, link.RxPackets, link.RxBytes)
			}

			// The filtered series is cumulative like a flow.
			send(t, 10, size, 40002, 7003, false)
			s2 := read(t, c)
			again := find(s2, func(r Record) bool { return r.Filtered && r.Direction == dir })
			if len(again) != 1 {
				t.Fatalf("second read: want one filtered %s record, got %+v", dir, again)
			}
			if r := again[0]; r.Packets != fp+10 || r.DeltaPackets != 10 || !r.StartTime.Equal(filteredStart(filtered, dir)) {
				t.Errorf("second read: filtered %d packets (delta %d) start %v, want %d (delta 10) and the same start", r.Packets, r.DeltaPackets, r.StartTime, fp+10)
			}
		})
	}
}

// splitFiltered returns the flows that counted packets and the filtered records of s.
func splitFiltered(s Snapshot) (flows, filtered []Record) {
	for _, r := range s.Records {
		switch {
		case r.Filtered:
			filtered = append(filtered, r)
		case r.Packets > 0:
			flows = append(flows, r)
		}
	}
	return flows, filtered
}

func filteredStart(rs []Record, dir Direction) time.Time {
	for _, r := range rs {
		if r.Direction == dir {
			return r.StartTime
		}
	}
	return time.Time{}
}

// Cgroup mode filters real traffic too: of three sockets in the cgroup,
// the one to a kept port inside the included CIDR is a flow, and the other
// two (an excluded port, an address outside the CIDR) are exactly the
// filtered series, in L3 bytes. Only the cgroup's sockets are counted, so
// nothing else can reach either.
func TestCgroupFiltersOnRealTraffic(t *testing.T) {
	nettest.RequireBPF(t)
	p := nettest.NewPair(t)
	abs, _ := testCgroup(t)
	rxKept := nettest.ListenUDP(t, p.NSPathB(), p.B4, 7201)
	rxPort := nettest.ListenUDP(t, p.NSPathB(), p.B4, 7203)
	rxV6 := nettest.ListenUDP(t, p.NSPathB(), p.B6, 7201)
	c := startCollector(t, Config{Mode: ModeCgroup, CgroupPath: abs,
		Filters: Filters{IncludeCIDRs: []string{"192.0.2.0/24"}, ExcludePorts: []string{"7203"}}})
	kept := startPeer(t, abs, p.NSA, netip.AddrPortFrom(p.A4, 41001), netip.AddrPortFrom(p.B4, 7201))
	port := startPeer(t, abs, p.NSA, netip.AddrPortFrom(p.A4, 41002), netip.AddrPortFrom(p.B4, 7203))
	v6 := startPeer(t, abs, p.NSA, netip.AddrPortFrom(p.A6, 41003), netip.AddrPortFrom(p.B6, 7201))
	kept.do(t, "send 25 100")
	port.do(t, "send 15 200")
	v6.do(t, "send 10 300")
	rxKept.Wait(t, 25)
	rxPort.Wait(t, 15)
	rxV6.Wait(t, 10)
	s := read(t, c)

	flows, filtered := splitFiltered(s)
	if len(flows) != 1 || flows[0].DstPort != 7201 || flows[0].IPVersion() != 4 || flows[0].Direction != Egress ||
		flows[0].Packets != 25 || flows[0].Bytes != 25*(20+8+100) {
		t.Errorf("want one egress flow to 192.0.2.2:7201 with 25 packets, %d bytes; got %+v", 25*(20+8+100), flows)
	}
	if len(filtered) != 1 || filtered[0].Direction != Egress || filtered[0].Packets != 15+10 ||
		filtered[0].Bytes != 15*(20+8+200)+10*(40+8+300) {
		t.Errorf("want one egress filtered series with 25 packets, %d bytes; got %+v", 15*(20+8+200)+10*(40+8+300), filtered)
	}
}
