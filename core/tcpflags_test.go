package core

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// flagsOf sums a flow table's TCP flag counters per decoded key.
func flagsOf(t *testing.T, m *ebpf.Map) map[FlowKey]TCPFlagCounts {
	t.Helper()
	out := map[FlowKey]TCPFlagCounts{}
	var k bpf.FlowFlowKey
	vals := make([]counters, lanesOf(t, m))
	it := m.Iterate()
	for it.Next(&k, &vals) {
		raw := sumTCP(vals)
		out[decodeKey(k)] = TCPFlagCounts{uint64(raw[0]), uint64(raw[1]), uint64(raw[2]), uint64(raw[3])}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Each TC and XDP program counts SYN, SYN+ACK, FIN and RST per flow from the
// flags byte of the TCP header, and nothing for packets without one.
func TestTCPFlagCounting(t *testing.T) {
	objs := loadFlowForTest(t, 64)
	tcpPkt := func(v6 bool, set func(*layers.TCP)) []byte {
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Window: 1024, DataOffset: 5}
		set(tcp)
		if v6 {
			return serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp)
		}
		return serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp)
	}
	// An IPv4 header announcing TCP whose header stops after 13 bytes: the
	// ports are there, the flags byte is not.
	short := rawEth(EtherTypeIPv4, append([]byte{0x45, 0, 0, 20 + 13, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2},
		0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50)...)
	for _, tc := range []struct {
		name string
		pkt  []byte
		want TCPFlagCounts
	}{
		{"syn", tcpPkt(false, func(h *layers.TCP) { h.SYN = true }), TCPFlagCounts{SYN: 1}},
		{"syn+ack", tcpPkt(false, func(h *layers.TCP) { h.SYN, h.ACK = true, true }), TCPFlagCounts{SYNACK: 1}},
		{"fin+ack", tcpPkt(false, func(h *layers.TCP) { h.FIN, h.ACK = true, true }), TCPFlagCounts{FIN: 1}},
		{"fin+psh+ack with data", tcpPkt(false, func(h *layers.TCP) { h.FIN, h.PSH, h.ACK = true, true, true }), TCPFlagCounts{FIN: 1}},
		{"rst", tcpPkt(false, func(h *layers.TCP) { h.RST = true }), TCPFlagCounts{RST: 1}},
		{"rst+ack", tcpPkt(false, func(h *layers.TCP) { h.RST, h.ACK = true, true }), TCPFlagCounts{RST: 1}},
		{"syn+fin+rst", tcpPkt(false, func(h *layers.TCP) { h.SYN, h.FIN, h.RST = true, true, true }), TCPFlagCounts{SYN: 1, FIN: 1, RST: 1}},
		{"ack only", tcpPkt(false, func(h *layers.TCP) { h.ACK = true }), TCPFlagCounts{}},
		{"psh+ack", tcpPkt(false, func(h *layers.TCP) { h.PSH, h.ACK = true, true }), TCPFlagCounts{}},
		{"ipv6 syn", tcpPkt(true, func(h *layers.TCP) { h.SYN = true }), TCPFlagCounts{SYN: 1}},
		{"ipv6 syn+ack", tcpPkt(true, func(h *layers.TCP) { h.SYN, h.ACK = true, true }), TCPFlagCounts{SYNACK: 1}},
		{"tcp header cut before the flags", short, TCPFlagCounts{}},
		{"udp", serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 40000, DstPort: 443}, gopacket.Payload{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}), TCPFlagCounts{}},
	} {
		for _, prog := range []struct {
			name string
			p    *ebpf.Program
		}{{"tc_ingress", objs.TcIngress}, {"tc_egress", objs.TcEgress}, {"xdp_ingress", objs.XdpIngress}} {
			t.Run(tc.name+"/"+prog.name, func(t *testing.T) {
				clearMap(t, objs.Flows)
				const n = 3
				runTimes(t, prog.p, tc.pkt, n)
				got := flagsOf(t, objs.Flows)
				if len(got) != 1 {
					t.Fatalf("want one flow, got %v", got)
				}
				want := TCPFlagCounts{n * tc.want.SYN, n * tc.want.SYNACK, n * tc.want.FIN, n * tc.want.RST}
				for _, f := range got {
					if f != want {
						t.Errorf("flags %+v, want %+v", f, want)
					}
				}
			})
		}
	}
}

// A SYN of a flow that finds the flow table full is counted in the overflow
// entry, with its flags.
func TestTCPFlagsInOverflow(t *testing.T) {
	objs := loadFlowForTest(t, 1)
	syn := func(port uint16) []byte {
		return serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), &layers.TCP{SrcPort: layers.TCPPort(port), DstPort: 443, SYN: true, Window: 1024})
	}
	runTimes(t, objs.TcIngress, syn(40000), 1)
	runTimes(t, objs.TcIngress, syn(40001), 4)
	var ok bpf.FlowOverflowKey
	var vals []counters
	it := objs.FlowsOverflow.Iterate()
	n := 0
	for it.Next(&ok, &vals) {
		n++
		p, _, _ := sum(vals)
		if raw := sumTCP(vals); p != 4 || raw != [4]uint32{4, 0, 0, 0} {
			t.Errorf("overflow entry: %d packets, flags %v; want 4 packets, 4 SYN", p, raw)
		}
	}
	if err := it.Err(); err != nil || n != 1 {
		t.Fatalf("%d overflow entries (%v), want 1", n, err)
	}
}

// The drain turns the kernel's wrapping 32-bit flag sums into cumulative
// 64-bit counts: growth across a wrap is taken modulo 2^32.
func TestTCPFlagCountersWrap(t *testing.T) {
	var st flowState
	st.addTCP([4]uint32{0xffff_fff0, 1, 2, 3})
	st.reported.tcp = st.tcp
	st.addTCP([4]uint32{0x10, 1, 2, 4})
	want := TCPFlagCounts{SYN: 0xffff_fff0 + 0x20, SYNACK: 1, FIN: 2, RST: 4}
	if st.tcp != want || st.deltaTCP() != (TCPFlagCounts{SYN: 0x20, RST: 1}) {
		t.Errorf("after a wrap: %+v delta %+v, want %+v delta 32 SYN 1 RST", st.tcp, st.deltaTCP(), want)
	}
}

// flagSum adds the flag counters of the records that match.
func flagSum(s Snapshot, match func(Record) bool) TCPFlagCounts {
	var f TCPFlagCounts
	for _, r := range s.Records {
		if !r.Overflow && !r.Filtered && match(r) {
			f = f.Add(r.TCP)
		}
	}
	return f
}

// Real connections over a veth: in tc, xdp and cgroup modes each series
// counts the SYN, SYN+ACK, FIN and RST packets the connections sent, equal
// to the handshake arithmetic and to nftables' counters of the same packets.
func TestTCPFlagsOnRealTraffic(t *testing.T) {
	const k, refused, port, closed = 6, 4, 7301, 7399
	for _, mode := range []Mode{ModeTC, ModeXDP, ModeCgroup} {
		t.Run(string(mode), func(t *testing.T) {
			p := nettest.NewPair(t)
			cfg := Config{Mode: mode, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()}
			if mode == ModeXDP {
				cfg.XDPMode = XDPGeneric
			}
			if mode == ModeCgroup {
				// The connections are made by this test process: its own
				// cgroup, so that only its sockets are in it.
				abs, _ := testCgroup(t)
				enterCgroup(t, abs)
				cfg = Config{Mode: ModeCgroup, CgroupPath: abs}
			}
			nft := nettest.NFTTCPFlags(t, p.NSA, p.IfA)
			c := startCollector(t, cfg)
			p.TCPExchanges(t, port, closed, k, refused)
			var ref map[string]uint64
			waitFor(t, func() bool {
				ref = nft()
				return ref["in_fin"] == k && ref["out_fin"] == k && ref["in_rst"] == refused
			}, "every FIN and RST in nftables' counters")
			s := read(t, c)

			// A's side only: in cgroup mode B's sockets are this process's too.
			out := func(r Record) bool { return r.Direction == Egress && r.SrcAddr == p.A4 }
			in := func(r Record) bool { return r.Direction == Ingress && r.DstAddr == p.A4 }
			egress := flagSum(s, func(r Record) bool { return out(r) && r.Proto == ProtoTCP })
			toPort := flagSum(s, func(r Record) bool { return out(r) && r.DstPort == port })
			fromPort := flagSum(s, func(r Record) bool { return in(r) && r.SrcPort == port })
			fromClosed := flagSum(s, func(r Record) bool { return in(r) && r.SrcPort == closed })
			wantIn := TCPFlagCounts{SYN: ref["in_syn"], SYNACK: ref["in_synack"], FIN: ref["in_fin"], RST: ref["in_rst"]}
			if got := fromPort.Add(fromClosed); got != wantIn {
				t.Errorf("ingress flags %+v, nftables input counted %+v", got, wantIn)
			}
			if fromPort != (TCPFlagCounts{SYNACK: k, FIN: k}) || fromClosed != (TCPFlagCounts{RST: refused}) {
				t.Errorf("ingress from port %d: %+v, want %d SYN+ACK and %d FIN; from closed port %d: %+v, want %d RST",
					port, fromPort, k, k, closed, fromClosed, refused)
			}
			if mode == ModeXDP {
				if !egress.IsZero() {
					t.Errorf("xdp counted egress flags %+v", egress)
				}
				return
			}
			wantOut := TCPFlagCounts{SYN: ref["out_syn"], SYNACK: ref["out_synack"], FIN: ref["out_fin"], RST: ref["out_rst"]}
			if egress != wantOut {
				t.Errorf("egress flags %+v, nftables output counted %+v", egress, wantOut)
			}
			if toPort != (TCPFlagCounts{SYN: k, FIN: k}) || egress.SYN != k+refused {
				t.Errorf("egress to port %d: %+v, want %d SYN and %d FIN; %d SYN in all, want %d", port, toPort, k, k, egress.SYN, k+refused)
			}
			// A second read: cumulative counts stay, deltas are zero.
			all := func(Record) bool { return true }
			s2 := read(t, c)
			if d, d0 := flagSum(s2, all), flagSum(s, all); d != d0 {
				t.Errorf("second read: cumulative flags %+v, first read %+v", d, d0)
			}
			for _, r := range s2.Records {
				if !r.DeltaTCP.IsZero() {
					t.Errorf("second read: delta %+v on %+v", r.DeltaTCP, r.FlowKey)
				}
			}
		})
	}
}

// enterCgroup moves the calling thread's process into cgroup dir for the
// rest of the test and back to its old cgroup at the end.
func enterCgroup(t *testing.T, dir string) {
	t.Helper()
	old, err := ownCgroupDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := writePID(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := writePID(old); err != nil {
			t.Errorf("back to cgroup %s: %v", old, err)
		}
	})
}

// ownCgroupDir is this process's cgroup2 directory.
func ownCgroupDir() (string, error) {
	mount, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mount, rel), nil
		}
	}
	return "", errors.New("no cgroup2 entry in /proc/self/cgroup")
}

func writePID(dir string) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
}

// kprobe mode, whose socket hooks see no TCP header, says at start that it
// counts no TCP flags, whether or not the kernel then lets it attach.
func TestKprobeModeSaysItCountsNoFlags(t *testing.T) {
	nettest.RequireBPF(t)
	var log strings.Builder
	c, err := New(Config{Mode: ModeKprobe, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background())
	c.Close()
	if !strings.Contains(log.String(), "kprobe mode counts no TCP flags") {
		t.Errorf("start (err %v) did not say that kprobe mode counts no TCP flags; log:\n%s", err, log.String())
	}
}
