package core

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/internal/bpftest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// sendUDP sends n datagrams of size bytes from the namespace at nsPath
// without waiting for them to arrive: a program in front may drop them.
func sendUDP(t *testing.T, nsPath string, src, dst netip.AddrPort, n, size int) {
	t.Helper()
	var c *net.UDPConn
	if err := nettest.Do(nsPath, func() (err error) {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatalf("dial udp: %v", err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		if i%16 == 15 {
			time.Sleep(time.Millisecond) // stay far below the backlog limit
		}
	}
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func bufferLogger(b *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// With another TCX program already on the hook, ours goes to the head and
// counts every packet whatever the other one does with it: pass (which
// ends a TCX chain), drop, or redirect to another interface. The other
// program's own counter, the veth counters and the test's traffic agree.
func TestTCXFirstInChain(t *testing.T) {
	if !haveTCX(t) {
		skipLacking(t, "tcx", "kernel has no TCX (Linux 6.6+); the legacy path is TestLegacyFilterRunsFirst")
	}
	for _, tc := range []struct {
		name    string
		verdict int32
		redir   bool
	}{{"pass", bpftest.TCXPass, false}, {"drop", bpftest.TCXDrop, false}, {"redirect", 0, true}} {
		for _, dir := range []Direction{Ingress, Egress} {
			t.Run(tc.name+"/"+dir.String(), func(t *testing.T) {
				p := nettest.NewPair(t)
				redirDev := "pvr" + p.IfA[3:]
				redirIndex := 0
				if tc.redir {
					// A second veth pair inside A: the redirect target, whose
					// own tx counter sees every redirected packet.
					ip(t, "-n", p.NSA, "link", "add", redirDev, "type", "veth", "peer", "name", "pvs"+p.IfA[3:])
					// No IPv6 on the pair: a link-local address would make
					// the kernel send its own DAD, MLD and router
					// solicitation out of redirDev, which its tx counter
					// would count with the redirected packets (121 of 120
					// once in the 6.12 guest).
					for _, dev := range []string{redirDev, "pvs" + p.IfA[3:]} {
						key := "net.ipv6.conf." + dev + ".disable_ipv6=1"
						if out, err := exec.Command("ip", "netns", "exec", p.NSA, "sysctl", "-qw", key).CombinedOutput(); err != nil {
							t.Fatalf("sysctl %s: %v: %s", key, err, out)
						}
					}
					ip(t, "-n", p.NSA, "link", "set", redirDev, "up")
					ip(t, "-n", p.NSA, "link", "set", "pvs"+p.IfA[3:], "up")
					redirIndex = ifindexIn(t, p.NSPathA(), redirDev)
				}
				f := bpftest.NewFront(t, "front_"+tc.name, tc.verdict, redirIndex)
				at := map[Direction]ebpf.AttachType{Ingress: ebpf.AttachTCXIngress, Egress: ebpf.AttachTCXEgress}[dir]
				bpftest.AttachTCX(t, p.NSPathA(), p.IfA, f.Prog, at, nil)

				c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()})
				if s := read(t, c); s.Health.HooksNotFirst() != 0 {
					t.Fatalf("hooks not first right after start: %+v", s.Health.Hooks)
				}
				before := p.LinkStats(t, p.NSA, p.IfA)
				// The front program counts from its attachment: compare from here.
				seen0, bytes0 := f.Seen(t)
				var redirBefore nettest.LinkStats
				if tc.redir {
					redirBefore = nettest.Stats(t, p.NSA, redirDev)
				}
				const n, size = 120, 200
				frame := uint64(nettest.UDPFrameLen(size, false))
				src, dst, nsPath, dstNS := netip.AddrPortFrom(p.A4, 41001), netip.AddrPortFrom(p.B4, 7101), p.NSPathA(), p.NSPathB()
				if dir == Ingress {
					src, dst, nsPath, dstNS = netip.AddrPortFrom(p.B4, 41001), netip.AddrPortFrom(p.A4, 7101), p.NSPathB(), p.NSPathA()
				}
				// A listener, so that no port-unreachable answer adds traffic.
				rx := nettest.ListenUDP(t, dstNS, dst.Addr(), dst.Port())
				sendUDP(t, nsPath, src, dst, n, size)
				waitFor(t, func() bool { pk, _ := f.Seen(t); return pk-seen0 >= n }, "the front program to see the traffic")
				s := read(t, c)
				rs := find(s, func(r Record) bool { return !r.Overflow && r.DstPort == 7101 && r.Direction == dir })
				if len(rs) != 1 || rs[0].Packets != n || rs[0].Bytes != n*frame {
					t.Fatalf("our count %+v, want one %s flow of %d packets, %d bytes", rs, dir, n, n*frame)
				}
				if fp, fb := f.Seen(t); fp-seen0 != n || fb-bytes0 != n*frame {
					t.Errorf("front program saw %d packets %d bytes, want %d and %d", fp-seen0, fb-bytes0, n, n*frame)
				}
				link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
				switch {
				case dir == Ingress && link.RxPackets != n:
					t.Errorf("veth rx counter grew by %d, want %d", link.RxPackets, n)
				case dir == Egress && tc.verdict == bpftest.TCXPass && !tc.redir && link.TxPackets != n:
					t.Errorf("veth tx counter grew by %d, want %d (front passes)", link.TxPackets, n)
				case dir == Egress && (tc.verdict == bpftest.TCXDrop || tc.redir) && link.TxPackets != 0:
					t.Errorf("veth tx counter grew by %d, want 0: the front program dropped or redirected them", link.TxPackets)
				}
				if tc.verdict == bpftest.TCXPass && !tc.redir {
					rx.Wait(t, n)
				}
				if tc.redir {
					if r := nettest.Stats(t, p.NSA, redirDev).Sub(redirBefore); r.TxPackets != n {
						t.Errorf("redirect target sent %d packets, want %d", r.TxPackets, n)
					}
				}
				if s.Health.HooksNotFirst() != 0 {
					t.Errorf("hooks not first: %+v", s.Health.Hooks)
				}
			})
		}
	}
}

// A program inserted at the head after we attached is reported at the next
// Read (health and one warning naming it), and the report clears when it
// goes.
func TestProgramInsertedInFrontIsReported(t *testing.T) {
	if !haveTCX(t) {
		skipLacking(t, "tcx", "kernel has no TCX (Linux 6.6+)")
	}
	p := nettest.NewPair(t)
	var logs syncBuffer
	c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), Logger: bufferLogger(&logs)})
	if s := read(t, c); s.Health.HooksNotFirst() != 0 {
		t.Fatalf("not first before anything was inserted: %+v", s.Health.Hooks)
	}
	f := bpftest.NewFront(t, "intruder", bpftest.TCXNext, 0)
	l := bpftest.AttachTCX(t, p.NSPathA(), p.IfA, f.Prog, ebpf.AttachTCXIngress, link.Head())
	id, err := programID(f.Prog)
	if err != nil {
		t.Fatal(err)
	}
	s := read(t, c)
	want := "program id " + itoa(int(id)) + " name intruder type SchedCLS"
	if s.Health.HooksNotFirst() != 1 {
		t.Fatalf("hooks not first %d, want 1: %+v", s.Health.HooksNotFirst(), s.Health.Hooks)
	}
	for _, h := range s.Health.Hooks {
		if h.Hook == "tcx/ingress" && h.InFront != want {
			t.Errorf("ingress hook in front %q, want %q", h.InFront, want)
		}
	}
	read(t, c) // a second Read must not warn again
	if got := strings.Count(logs.String(), "another program runs before ours"); got != 1 {
		t.Errorf("%d warnings about the program in front, want 1:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), want) {
		t.Errorf("warning does not name %q:\n%s", want, logs.String())
	}
	l.Close()
	if s := read(t, c); s.Health.HooksNotFirst() != 0 {
		t.Errorf("still not first after the intruder left: %+v", s.Health.Hooks)
	}
	if !strings.Contains(logs.String(), "runs first on this hook again") {
		t.Errorf("no log that we run first again:\n%s", logs.String())
	}
}

// Legacy TC: a direct-action cls_bpf filter that already holds priority 1
// and returns TC_ACT_OK (which ends the filter chain) does not hide packets
// from us: ours joins priority 1 at the head of its list. A filter at
// priority 1 that we cannot run before (another protocol) is named.
func TestLegacyFilterRunsFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prio     uint16
		protocol uint16
		first    bool
	}{
		{"prio1-all-protocols", 1, unix.ETH_P_ALL, true},
		{"prio3", 3, unix.ETH_P_ALL, true},
		{"prio1-ipv4-only", 1, unix.ETH_P_IP, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := nettest.NewPair(t)
			f := bpftest.NewFront(t, "legacy_front", bpftest.TCXPass, 0)
			ns, err := openNS(p.NSPathA())
			if err != nil {
				t.Fatal(err)
			}
			defer ns.close()
			ifindex := ifindexIn(t, p.NSPathA(), p.IfA)
			if err := ns.nl.QdiscAdd(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex,
				Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}); err != nil {
				t.Fatalf("add clsact: %v", err)
			}
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				if err := ns.nl.FilterAdd(&netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent,
					Handle: 1, Protocol: tc.protocol, Priority: tc.prio}, Fd: f.Prog.FD(), Name: "other-datapath", DirectAction: true}); err != nil {
					t.Fatalf("add the other filter: %v", err)
				}
			}
			var logs syncBuffer
			c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), legacyTC: true, Logger: bufferLogger(&logs)})
			s := read(t, c)
			if !tc.first {
				if s.Health.HooksNotFirst() != 2 {
					t.Fatalf("hooks not first %d, want 2: %+v", s.Health.HooksNotFirst(), s.Health.Hooks)
				}
				for _, h := range s.Health.Hooks {
					if !strings.Contains(h.InFront, "bpf filter priority 1 handle 0x1 protocol 0x0800 name other-datapath") {
						t.Errorf("%s: in front %q does not name the filter", h.Hook, h.InFront)
					}
				}
				if !strings.Contains(logs.String(), "holds priority 1 with another classifier kind or protocol") {
					t.Errorf("no warning that the filter cannot be preceded:\n%s", logs.String())
				}
				return
			}
			if n := s.Health.HooksNotFirst(); n != 0 {
				t.Fatalf("hooks not first %d: %+v", n, s.Health.Hooks)
			}
			before := p.LinkStats(t, p.NSA, p.IfA)
			// The other filter counts from its attachment; compare over the same window.
			seen0, _ := f.Seen(t)
			const n, size = 90, 300
			p.SendUDP(t, n, size, 41002, 7102, false)
			p.SendUDPFromB(t, n, size, 41003, 7103, false)
			s = read(t, c)
			link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
			frame := uint64(nettest.UDPFrameLen(size, false))
			for _, want := range []struct {
				port uint16
				dir  Direction
			}{{7102, Egress}, {7103, Ingress}} {
				rs := find(s, func(r Record) bool { return !r.Overflow && r.DstPort == want.port && r.Direction == want.dir })
				if len(rs) != 1 || rs[0].Packets != n || rs[0].Bytes != n*frame {
					t.Errorf("%s flow to %d: %+v, want %d packets %d bytes", want.dir, want.port, rs, n, n*frame)
				}
			}
			ep, eb := totals(s, Egress)
			ipk, ib := totals(s, Ingress)
			if ep != link.TxPackets || eb != link.TxBytes || ipk != link.RxPackets || ib != link.RxBytes {
				t.Errorf("totals egress %d/%d ingress %d/%d, veth tx %d/%d rx %d/%d", ep, eb, ipk, ib,
					link.TxPackets, link.TxBytes, link.RxPackets, link.RxBytes)
			}
			// The other filter still runs: it saw the same packets after us.
			if fp, _ := f.Seen(t); fp-seen0 != link.TxPackets+link.RxPackets {
				t.Errorf("the other filter saw %d packets, the veth moved %d", fp-seen0, link.TxPackets+link.RxPackets)
			}
		})
	}
}

// An XDP hook holds one program: the error names the one there and says
// which mode works instead.
func TestXDPBusyNamesTheHolder(t *testing.T) {
	p := nettest.NewPair(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "other_xdp", Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	attachXDPIn(t, p.NSPathA(), p.IfA, prog)
	id, _ := programID(prog)
	c, err := New(Config{Mode: ModeXDP, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Start(t.Context())
	want := "program id " + itoa(int(id)) + " name other_xdp type XDP already holds the interface's XDP hook"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `use mode = "tc"`) {
		t.Fatalf("start error %v, want it to contain %q and suggest mode tc", err, want)
	}
}

func attachXDPIn(t *testing.T, nsPath, dev string, prog *ebpf.Program) {
	t.Helper()
	var l link.Link
	if err := nettest.Do(nsPath, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index})
		return err
	}); err != nil {
		t.Fatalf("attach xdp to %s: %v", dev, err)
	}
	t.Cleanup(func() { l.Close() })
}

func ifindexIn(t *testing.T, nsPath, dev string) int {
	t.Helper()
	var idx int
	if err := nettest.Do(nsPath, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err == nil {
			idx = ifc.Index
		}
		return err
	}); err != nil {
		t.Fatalf("look up %s: %v", dev, err)
	}
	return idx
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
