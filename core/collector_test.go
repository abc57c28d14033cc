package core

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// startCollector starts a collector on p's interface A and closes it when t ends.
func startCollector(t *testing.T, cfg Config) *Collector {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *Collector) Snapshot {
	t.Helper()
	s, err := c.Read(context.Background())
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return s
}

// readFunc drains c by ReadFunc and returns what Read would: the records,
// copied (their RTT too) as the callback receives them, in its order.
func readFunc(t *testing.T, c *Collector) Snapshot {
	t.Helper()
	var recs []Record
	s, err := c.ReadFunc(context.Background(), func(r *Record) {
		cp := *r
		if r.RTT != nil {
			rtt := *r.RTT
			cp.RTT = &rtt
		}
		recs = append(recs, cp)
	})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if s.Records != nil {
		t.Fatalf("ReadFunc returned %d records in its snapshot besides handing them over", len(s.Records))
	}
	s.Records = recs
	return s
}

// readers are the two ways to drain a collector, for tests that check
// both give the same records.
var readers = []struct {
	name string
	read func(*testing.T, *Collector) Snapshot
}{{"Read", read}, {"ReadFunc", readFunc}}

// flowsTo returns the records of non-overflow flows with the given
// destination port, keyed by direction.
func find(s Snapshot, match func(Record) bool) []Record {
	var out []Record
	for _, r := range s.Records {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

func totals(s Snapshot, dir Direction) (packets, bytes uint64) {
	for _, r := range s.Records {
		if r.Direction == dir {
			packets += r.Packets
			bytes += r.Bytes
		}
	}
	return packets, bytes
}

// In each interface mode, UDP traffic over a veth is counted exactly, per
// flow and in total, and the totals equal the veth's own counters.
func TestInterfaceModesCountExactly(t *testing.T) {
	for i, tc := range []struct {
		mode    Mode
		xdpMode string
		// A's veth end: tc sees A's sends as egress; xdp sees only ingress,
		// so traffic is sent from B to A for it.
		fromB bool
	}{
		{ModeTC, "", false},
		{ModeTC, "", true},
		{ModeXDP, XDPGeneric, true},
		{ModeXDP, XDPNative, true},
		{ModeXDP, XDPAuto, true},
	} {
		name := string(tc.mode) + "/" + tc.xdpMode
		if tc.fromB {
			name += "/b-to-a"
		}
		t.Run(name, func(t *testing.T) {
			p := nettest.NewPair(t)
			cfg := Config{Mode: tc.mode, XDPMode: tc.xdpMode, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()}
			wantCapacity := defaultMaxFlows // the tests' default (TestMain)
			if i == 0 {
				// The default table size once, as an agent without max_flows loads it.
				cfg.MaxFlows, wantCapacity = DefaultMaxFlows, DefaultMaxFlows
			}
			if tc.mode != ModeXDP {
				cfg.XDPMode = ""
			}
			c := startCollector(t, cfg)
			// Both readers, each for one read of each case: the first
			// read's exact counts and the second's cumulative ones.
			first, second := readers[i%2], readers[(i+1)%2]
			t.Logf("first read by %s, second by %s", first.name, second.name)
			before := p.LinkStats(t, p.NSA, p.IfA)
			const n4, size4, n6, size6 = 200, 300, 150, 1000
			send := p.SendUDP
			if tc.fromB {
				send = p.SendUDPFromB
			}
			send(t, n4, size4, 40001, 7001, false)
			send(t, n6, size6, 40002, 7002, true)
			s := first.read(t, c)
			link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)

			dir := Egress
			if tc.fromB {
				dir = Ingress
			}
			for _, want := range []struct {
				v6       bool
				dport    uint16
				n, frame int
			}{
				{false, 7001, n4, nettest.UDPFrameLen(size4, false)},
				{true, 7002, n6, nettest.UDPFrameLen(size6, true)},
			} {
				rs := find(s, func(r Record) bool { return !r.Overflow && r.DstPort == want.dport })
				if len(rs) != 1 {
					t.Fatalf("want one flow to port %d, got %d: %+v", want.dport, len(rs), rs)
				}
				r := rs[0]
				if r.Packets != uint64(want.n) || r.Bytes != uint64(want.n*want.frame) {
					t.Errorf("port %d: %d packets %d bytes, want %d and %d", want.dport, r.Packets, r.Bytes, want.n, want.n*want.frame)
				}
				if r.Direction != dir || r.Interface != p.IfA || r.Proto != ProtoUDP || (r.IPVersion() == 6) != want.v6 {
					t.Errorf("port %d: record %+v: want direction %s on %s, udp, v6=%v", want.dport, r.FlowKey, dir, p.IfA, want.v6)
				}
				if r.DeltaPackets != r.Packets || r.StartTime.IsZero() || r.StartTime.After(s.Time) {
					t.Errorf("port %d: first read delta %d of %d, start %v (read at %v)", want.dport, r.DeltaPackets, r.Packets, r.StartTime, s.Time)
				}
			}
			// Everything that crossed the hook, test traffic or not, is in some record.
			if tc.mode == ModeTC {
				tp, tb := totals(s, Egress)
				if tp != link.TxPackets || tb != link.TxBytes {
					t.Errorf("egress totals %d packets %d bytes, veth tx counters %d and %d", tp, tb, link.TxPackets, link.TxBytes)
				}
			}
			ip, ib := totals(s, Ingress)
			if tc.mode == ModeXDP && tc.xdpMode != XDPGeneric {
				// A veth with a native XDP program receives through NAPI and
				// counts rx bytes after the Ethernet header is pulled.
				link.RxBytes += link.RxPackets * nettest.EthHeaderLen
			}
			if ip != link.RxPackets || ib != link.RxBytes {
				t.Errorf("ingress totals %d packets %d bytes, veth rx counters %d and %d", ip, ib, link.RxPackets, link.RxBytes)
			}
			if s.Health.Capacity != wantCapacity || s.Health.ActiveFlows == 0 {
				t.Errorf("health %+v", s.Health)
			}

			// A second read: counters stay cumulative, deltas are zero.
			s2 := second.read(t, c)
			rs := find(s2, func(r Record) bool { return r.DstPort == 7001 })
			if len(rs) != 1 || rs[0].Packets != n4 || rs[0].DeltaPackets != 0 {
				t.Errorf("second read: %+v, want cumulative %d packets and delta 0", rs, n4)
			}
		})
	}
}

// After Close, and after a process holding the programs is killed, nothing
// stays attached to the interface.
func TestCloseDetachesEverything(t *testing.T) {
	p := nettest.NewPair(t)
	for _, mode := range []Mode{ModeTC, ModeXDP} {
		c := startCollector(t, Config{Mode: mode, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()})
		if got := attachedPrograms(t, p.NSA, p.IfA); got == 0 {
			t.Fatalf("%s: no program attached after Start", mode)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("%s: close: %v", mode, err)
		}
		if got := attachedPrograms(t, p.NSA, p.IfA); got != 0 {
			t.Errorf("%s: %d programs still attached after Close", mode, got)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
}

// attachedPrograms counts the programs the kernel has on dev: TCX links,
// cls_bpf filters and XDP.
func attachedPrograms(t *testing.T, ns, dev string) int {
	t.Helper()
	nsc, err := openNS("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsc.close()
	l, err := nsc.nl.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		n++
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := nsc.nl.FilterList(l, parent)
		if err != nil && !isNotExist(err) && !errors.Is(err, unix.EINVAL) {
			t.Fatalf("list filters: %v", err)
		}
		n += len(filters)
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		err := nsc.do(func() error {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
			if err != nil {
				return err
			}
			n += len(res.Programs)
			return nil
		})
		// Kernels without TCX (before 6.6) answer EINVAL or ErrNotSupported.
		if err != nil && !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
			t.Fatalf("query tcx programs: %v", err)
		}
	}
	return n
}

// Interfaces matching a glob are attached when they appear, dropped when
// deleted (the others keep counting), and attached again when they return.
func TestGlobFollowsLinkEvents(t *testing.T) {
	p := nettest.NewPair(t)
	c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{"pva*", "pvx*"}, NetNS: p.NSPathA()})
	extra, peer := "pvx"+p.IfA[3:], "pvy"+p.IfA[3:]
	ipA := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", p.NSA}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ipA("link", "add", extra, "type", "veth", "peer", "name", peer)
	waitFor(t, func() bool { return hooksOn(read(t, c), extra) == 2 }, "attach to new interface "+extra)
	if n := hooksOn(read(t, c), peer); n != 0 {
		t.Errorf("%s does not match the globs but has %d hooks", peer, n)
	}
	ipA("link", "del", extra)
	waitFor(t, func() bool { return hooksOn(read(t, c), extra) == 0 }, "drop deleted interface "+extra)
	// The surviving interface still counts.
	p.SendUDP(t, 10, 50, 40003, 7003, false)
	rs := find(read(t, c), func(r Record) bool { return r.DstPort == 7003 })
	if len(rs) != 1 || rs[0].Packets != 10 {
		t.Errorf("after deleting %s: %+v, want 10 packets on %s", extra, rs, p.IfA)
	}
	ipA("link", "add", extra, "type", "veth", "peer", "name", peer)
	waitFor(t, func() bool { return hooksOn(read(t, c), extra) == 2 }, "re-attach returning interface "+extra)
}

func hooksOn(s Snapshot, target string) int {
	n := 0
	for _, h := range s.Health.Hooks {
		if h.Target == target && h.Attached {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("did not %s within a second", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
