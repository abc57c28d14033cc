package aggregate

import (
	"net/netip"
	"testing"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

func flowKey(etherType uint16, proto uint8, src string, sport uint16, dst string, dport uint16) core.FlowKey {
	return core.FlowKey{
		Ifindex: 2, Direction: core.Egress, EtherType: etherType, Proto: proto,
		SrcAddr: netip.MustParseAddr(src), SrcPort: sport,
		DstAddr: netip.MustParseAddr(dst), DstPort: dport,
	}
}

func tcp4(src string, sport uint16, dst string, dport uint16) core.FlowKey {
	return flowKey(core.EtherTypeIPv4, core.ProtoTCP, src, sport, dst, dport)
}

func keyOf(t *testing.T, cfg Config, fk core.FlowKey, cgroup string) Key {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	r := core.Record{FlowKey: fk, Interface: "eth0", CgroupPath: cgroup, AppProto: "dns"}
	return newKeyer(cfg.withDefaults()).key(&r)
}

func TestFoldPorts(t *testing.T) {
	ports := []Dimension{DimSrcPort, DimDstPort}
	withProto := []Dimension{DimProto, DimSrcPort, DimDstPort}
	eph := Config{Dimensions: ports, FoldPorts: FoldEphemeral}
	higher := Config{Dimensions: ports, FoldPorts: FoldHigher}
	cases := []struct {
		name string
		cfg  Config
		fk   core.FlowKey
		want Key
	}{
		{"off keeps both", Config{Dimensions: ports}, tcp4("10.0.0.2", 51234, "10.0.0.1", 443), Key{HasPorts: true, SrcPort: 51234, DstPort: 443}},
		{"ephemeral client side", eph, tcp4("10.0.0.2", 51234, "10.0.0.1", 443), Key{HasPorts: true, SrcPortFolded: true, DstPort: 443}},
		{"ephemeral server reply", eph, tcp4("10.0.0.1", 443, "10.0.0.2", 51234), Key{HasPorts: true, SrcPort: 443, DstPortFolded: true}},
		{"just below the boundary", eph, tcp4("10.0.0.2", 32767, "10.0.0.1", 443), Key{HasPorts: true, SrcPort: 32767, DstPort: 443}},
		{"at the boundary", eph, tcp4("10.0.0.2", 32768, "10.0.0.1", 443), Key{HasPorts: true, SrcPortFolded: true, DstPort: 443}},
		{"both ephemeral", eph, tcp4("10.0.0.2", 40000, "10.0.0.1", 50000), Key{HasPorts: true, SrcPortFolded: true, DstPortFolded: true}},
		{"custom boundary", Config{Dimensions: ports, FoldPorts: FoldEphemeral, EphemeralPortMin: 1024}, tcp4("10.0.0.2", 1024, "10.0.0.1", 1023), Key{HasPorts: true, SrcPortFolded: true, DstPort: 1023}},
		{"udp folds", eph, flowKey(core.EtherTypeIPv6, core.ProtoUDP, "2001:db8::2", 60000, "2001:db8::1", 53), Key{HasPorts: true, SrcPortFolded: true, DstPort: 53}},
		{"sctp folds", eph, flowKey(core.EtherTypeIPv4, core.ProtoSCTP, "10.0.0.2", 36412, "10.0.0.1", 38412), Key{HasPorts: true, SrcPortFolded: true, DstPortFolded: true}},
		{"higher folds the higher", higher, tcp4("10.0.0.1", 443, "10.0.0.2", 51234), Key{HasPorts: true, SrcPort: 443, DstPortFolded: true}},
		{"higher below the ephemeral range", higher, tcp4("10.0.0.2", 1023, "10.0.0.1", 22), Key{HasPorts: true, SrcPortFolded: true, DstPort: 22}},
		{"higher with equal ports", higher, flowKey(core.EtherTypeIPv4, core.ProtoUDP, "10.0.0.2", 5353, "224.0.0.251", 5353), Key{HasPorts: true, SrcPort: 5353, DstPort: 5353}},
		// ICMP echo request: type 8 in SrcPort, code 0 in DstPort; these
		// are not ports and must never fold.
		{"icmp is not folded", Config{Dimensions: withProto, FoldPorts: FoldHigher}, flowKey(core.EtherTypeIPv4, core.ProtoICMP, "10.0.0.2", 8, "10.0.0.1", 0), Key{Transport: "icmp", SrcPort: 8}},
		{"icmpv6 is not folded", Config{Dimensions: withProto, FoldPorts: FoldEphemeral, EphemeralPortMin: 100}, flowKey(core.EtherTypeIPv6, core.ProtoICMPv6, "2001:db8::2", 128, "2001:db8::1", 0), Key{Transport: "ipv6-icmp", SrcPort: 128}},
		// Without proto, ICMP type and code could not be told from ports.
		{"icmp without proto drops type and code", higher, flowKey(core.EtherTypeIPv4, core.ProtoICMP, "10.0.0.2", 8, "10.0.0.1", 0), Key{}},
		{"tcp port 0 is still a port", Config{Dimensions: ports}, tcp4("10.0.0.2", 0, "10.0.0.1", 0), Key{HasPorts: true}},
		{"only dst_port kept", Config{Dimensions: []Dimension{DimDstPort}, FoldPorts: FoldHigher}, tcp4("10.0.0.2", 51234, "10.0.0.1", 443), Key{HasPorts: true, DstPort: 443}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := keyOf(t, c.cfg, c.fk, ""); got != c.want {
				t.Errorf("key\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestCIDRGroups(t *testing.T) {
	groups := []CIDRGroup{
		{"office", "10.1.0.0/16"},
		{"lab", "10.1.2.0/24"},
		{"printer", "10.1.2.9/32"},
		{"v6office", "2001:db8:1::/48"},
	}
	reversed := []CIDRGroup{groups[3], groups[2], groups[1], groups[0]}
	addrs := []Dimension{DimSrcIP, DimDstIP}
	a := netip.MustParseAddr
	cases := []struct {
		name   string
		groups []CIDRGroup
		other  bool
		fk     core.FlowKey
		want   Key
	}{
		{"most specific wins", groups, false, tcp4("10.1.2.3", 1, "10.1.9.9", 2), Key{}.WithLabels(Labels{SrcGroup: "lab", DstGroup: "office"})},
		{"order does not matter", reversed, false, tcp4("10.1.2.3", 1, "10.1.9.9", 2), Key{}.WithLabels(Labels{SrcGroup: "lab", DstGroup: "office"})},
		{"single address", groups, false, tcp4("10.1.2.9", 1, "10.1.2.10", 2), Key{}.WithLabels(Labels{SrcGroup: "printer", DstGroup: "lab"})},
		{"ungrouped kept", groups, false, tcp4("192.0.2.7", 1, "10.1.0.1", 2), Key{SrcAddr: a("192.0.2.7")}.WithLabels(Labels{DstGroup: "office"})},
		{"ungrouped as other", groups, true, tcp4("192.0.2.7", 1, "10.1.0.1", 2), Key{}.WithLabels(Labels{SrcGroup: Other, DstGroup: "office"})},
		{"ipv6", groups, true, flowKey(core.EtherTypeIPv6, core.ProtoTCP, "2001:db8:1::5", 1, "2001:db8:2::5", 2), Key{}.WithLabels(Labels{SrcGroup: "v6office", DstGroup: Other})},
		{"v4-mapped address joins the v4 group", groups, false, flowKey(core.EtherTypeIPv6, core.ProtoTCP, "::ffff:10.1.2.3", 1, "::ffff:192.0.2.7", 2), Key{DstAddr: a("::ffff:192.0.2.7")}.WithLabels(Labels{SrcGroup: "lab"})},
		{"v4 range does not match v6", []CIDRGroup{{"everything4", "0.0.0.0/0"}}, false, flowKey(core.EtherTypeIPv6, core.ProtoTCP, "2001:db8::1", 1, "10.0.0.1", 2), Key{SrcAddr: a("2001:db8::1")}.WithLabels(Labels{DstGroup: "everything4"})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{Dimensions: addrs, CIDRGroups: c.groups, UngroupedAsOther: c.other}
			if got := keyOf(t, cfg, c.fk, ""); got != c.want {
				t.Errorf("key\n got %+v\nwant %+v", got, c.want)
			}
		})
	}

	t.Run("arp has no address to group", func(t *testing.T) {
		arp := core.FlowKey{EtherType: core.EtherTypeARP, DstPort: 1}
		cfg := Config{Dimensions: []Dimension{DimSrcIP, DimProto}, CIDRGroups: groups, UngroupedAsOther: true}
		if got, want := keyOf(t, cfg, arp, ""), (Key{Transport: "arp"}); got != want {
			t.Errorf("key\n got %+v\nwant %+v", got, want)
		}
	})
}

func TestKeyDimensions(t *testing.T) {
	full := core.FlowKey{
		Ifindex: 3, Direction: core.Egress, EtherType: core.EtherTypeIPv6, VLAN: 42, Proto: core.ProtoUDP, Flags: core.FlagTruncated,
		SrcAddr: netip.MustParseAddr("2001:db8::2"), SrcPort: 40000,
		DstAddr: netip.MustParseAddr("2001:db8::1"), DstPort: 53,
		CgroupID: 7, PID: 1234, Comm: "resolver",
	}
	const cgroup = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d3f5e8a_1b2c_4d5e_8f90_a1b2c3d4e5f6.slice/cri-containerd-3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f.scope"
	cases := []struct {
		name string
		dims []Dimension
		want Key
	}{
		{"defaults", nil, Key{
			Interface: "eth0", Direction: core.Egress, IPVersion: 6, Transport: "udp",
			SrcAddr: full.SrcAddr, DstAddr: full.DstAddr, HasPorts: true, SrcPort: 40000, DstPort: 53,
		}},
		{"opt-in only", []Dimension{DimVLAN, DimFlags, DimPID, DimComm, DimCgroup, DimContainerID, DimPodUID, DimAppProto}, Key{VLAN: 42, Flags: core.FlagTruncated, PID: 1234}.WithLabels(Labels{
			Comm: "resolver", Cgroup: cgroup, AppProto: "dns",
			ContainerID: "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f",
			PodUID:      "0d3f5e8a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
		})},
		{"pod without container", []Dimension{DimPodUID}, Key{}.WithLabels(Labels{PodUID: "0d3f5e8a-1b2c-4d5e-8f90-a1b2c3d4e5f6"})},
		{"direction only", []Dimension{DimDirection}, Key{Direction: core.Egress}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := keyOf(t, Config{Dimensions: c.dims}, full, cgroup); got != c.want {
				t.Errorf("key\n got %+v\nwant %+v", got, c.want)
			}
		})
	}

	t.Run("removed cgroup is kept apart by id", func(t *testing.T) {
		cfg := Config{Dimensions: []Dimension{DimCgroup, DimContainerID}}
		if got := keyOf(t, cfg, full, ""); got != (Key{CgroupID: 7}) {
			t.Errorf("key %+v", got)
		}
	})
	t.Run("proto without ip_version merges v4 and v6", func(t *testing.T) {
		cfg := Config{Dimensions: []Dimension{DimProto}}
		v4 := keyOf(t, cfg, tcp4("10.0.0.2", 1, "10.0.0.1", 2), "")
		v6 := keyOf(t, cfg, flowKey(core.EtherTypeIPv6, core.ProtoTCP, "2001:db8::2", 1, "2001:db8::1", 2), "")
		if v4 != v6 || v4.Transport != "tcp" {
			t.Errorf("v4 key %+v, v6 key %+v: want one key with Transport tcp", v4, v6)
		}
	})
	t.Run("non-IP proto", func(t *testing.T) {
		lldp := core.FlowKey{EtherType: 0x88cc}
		if got := keyOf(t, Config{Dimensions: []Dimension{DimProto, DimIPVersion}}, lldp, ""); got != (Key{Transport: "ethertype-0x88cc"}) {
			t.Errorf("key %+v", got)
		}
	})
}

// One keyer turns records whose labels alternate into keys with their own
// labels: the keyer's cache of the last labels never hands a record the
// previous one's, and keys with equal labels are equal (one interned copy).
func TestKeyLabelsFollowRecords(t *testing.T) {
	kr := newKeyer(Config{Dimensions: []Dimension{DimComm, DimPID}}.withDefaults())
	comms := []string{"curl", "wget", "curl", "", "curl", "wget", "wget"}
	keys := make([]Key, len(comms))
	for i, comm := range comms {
		r := core.Record{FlowKey: core.FlowKey{PID: 7, Comm: comm}}
		keys[i] = kr.key(&r)
		if got := keys[i].Labels(); got != (Labels{Comm: comm}) {
			t.Errorf("record %d (comm %q): labels %+v", i, comm, got)
		}
	}
	for i := range keys {
		for j := range keys {
			if (keys[i] == keys[j]) != (comms[i] == comms[j]) {
				t.Errorf("keys of comm %q and %q: equal %v", comms[i], comms[j], keys[i] == keys[j])
			}
		}
	}
	if keys[3] != (Key{PID: 7}) {
		t.Errorf("a key without labels %+v, want one that holds none", keys[3])
	}
}
