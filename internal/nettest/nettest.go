// Package nettest builds throw-away network namespaces joined by a veth pair,
// so tests can send known traffic without touching any other network.
package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireBPF skips t when the process cannot load BPF programs, unless
// PKTSTAT_REQUIRE_BPF=1, in which case it fails t: CI must run every test.
// As root it lifts RLIMIT_MEMLOCK where the kernel charges maps to it
// (before 5.11), as Collector.Start does, for tests that load objects
// themselves; core's TestStartUnderLowMemlockLimit covers Start's own raise.
func RequireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		if err := rlimit.RemoveMemlock(); err != nil {
			t.Fatalf("lift RLIMIT_MEMLOCK for a kernel that charges BPF maps to it: %v", err)
		}
		return
	}
	if os.Getenv("PKTSTAT_REQUIRE_BPF") == "1" {
		t.Fatal("PKTSTAT_REQUIRE_BPF=1 but not running as root: BPF tests need root (run `sudo make test`)")
	}
	t.Skip("needs root for BPF and network namespaces (set PKTSTAT_REQUIRE_BPF=1 to make this a failure)")
}

// Pair is two network namespaces, A and B, joined by one veth pair.
type Pair struct {
	NSA, NSB string // namespace names under /var/run/netns
	IfA, IfB string // veth ends, IfA in A and IfB in B
	A4, B4   netip.Addr
	A6, B6   netip.Addr
	MACA     net.HardwareAddr
	MACB     net.HardwareAddr
}

// NewPair creates the namespaces and the veth pair, addresses both ends
// (192.0.2.0/24 and 2001:db8::/64, documentation ranges, no default route),
// adds static neighbour entries so no ARP or ND crosses the link, waits for
// the link to fall quiet, and removes everything when t ends.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	RequireBPF(t)
	id := randID()
	p := &Pair{
		NSA: "pkta-" + id, NSB: "pktb-" + id,
		IfA: "pva" + id, IfB: "pvb" + id,
		A4: netip.MustParseAddr("192.0.2.1"), B4: netip.MustParseAddr("192.0.2.2"),
		A6: netip.MustParseAddr("2001:db8::1"), B6: netip.MustParseAddr("2001:db8::2"),
	}
	t.Cleanup(func() {
		// Deleting a namespace deletes the veth end in it, and so its peer.
		_ = exec.Command("ip", "netns", "del", p.NSA).Run()
		_ = exec.Command("ip", "netns", "del", p.NSB).Run()
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", p.NSA)
	run("netns", "add", p.NSB)
	run("link", "add", p.IfA, "netns", p.NSA, "type", "veth", "peer", "name", p.IfB, "netns", p.NSB)
	for _, end := range []struct{ ns, dev, v4, v6 string }{
		{p.NSA, p.IfA, "192.0.2.1/24", "2001:db8::1/64"},
		{p.NSB, p.IfB, "192.0.2.2/24", "2001:db8::2/64"},
	} {
		run("-n", end.ns, "link", "set", "lo", "up")
		// No link-local address: it would send router solicitations.
		run("-n", end.ns, "link", "set", end.dev, "addrgenmode", "none")
		// Joining the solicited-node groups sends MLD reports, repeated
		// after up to the unsolicited report interval (1 s by default);
		// 10 ms puts the repeats well inside the settle window below.
		for _, v := range []string{"mldv1", "mldv2"} {
			key := "net.ipv6.conf." + end.dev + "." + v + "_unsolicited_report_interval=10"
			if out, err := exec.Command("ip", "netns", "exec", end.ns, "sysctl", "-qw", key).CombinedOutput(); err != nil {
				t.Fatalf("sysctl %s: %v: %s", key, err, out)
			}
		}
		run("-n", end.ns, "addr", "add", end.v4, "dev", end.dev)
		run("-n", end.ns, "addr", "add", end.v6, "dev", end.dev, "nodad")
		run("-n", end.ns, "link", "set", end.dev, "up")
	}
	p.MACA = p.mac(t, p.NSA, p.IfA)
	p.MACB = p.mac(t, p.NSB, p.IfB)
	run("-n", p.NSA, "neigh", "replace", "192.0.2.2", "lladdr", p.MACB.String(), "dev", p.IfA, "nud", "permanent")
	run("-n", p.NSA, "neigh", "replace", "2001:db8::2", "lladdr", p.MACB.String(), "dev", p.IfA, "nud", "permanent")
	run("-n", p.NSB, "neigh", "replace", "192.0.2.1", "lladdr", p.MACA.String(), "dev", p.IfB, "nud", "permanent")
	run("-n", p.NSB, "neigh", "replace", "2001:db8::1", "lladdr", p.MACA.String(), "dev", p.IfB, "nud", "permanent")
	p.settle(t)
	return p
}

// NSPathA is the namespace file of A, for core.Config.NetNS.
func (p *Pair) NSPathA() string { return "/var/run/netns/" + p.NSA }

// NSPathB is the namespace file of B.
func (p *Pair) NSPathB() string { return "/var/run/netns/" + p.NSB }

// DoA runs fn on a locked OS thread inside namespace A.
func (p *Pair) DoA(fn func() error) error { return Do(p.NSPathA(), fn) }

// DoB runs fn on a locked OS thread inside namespace B.
func (p *Pair) DoB(fn func() error) error { return Do(p.NSPathB(), fn) }

// Do runs fn on a fresh OS thread that has entered the namespace at path.
// Sockets created in fn stay in that namespace when used elsewhere.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is never unlocked: if switching back failed it must
		// die with the goroutine rather than serve others in the wrong namespace.
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// LinkStats are an interface's own counters.
type LinkStats struct {
	RxPackets, RxBytes, TxPackets, TxBytes uint64
}

// Stats reads the counters of dev in namespace ns (a name under /var/run/netns).
func Stats(t testing.TB, ns, dev string) LinkStats {
	t.Helper()
	st := linkIn(t, ns, dev).Attrs().Statistics
	return LinkStats{RxPackets: st.RxPackets, RxBytes: st.RxBytes, TxPackets: st.TxPackets, TxBytes: st.TxBytes}
}

// linkIn looks dev up in namespace ns.
func linkIn(t testing.TB, ns, dev string) netlink.Link {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns, err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(dev)
	if err != nil {
		t.Fatalf("link %s in %s: %v", dev, ns, err)
	}
	return l
}

// LinkStats reads the counters of dev in namespace ns.
func (p *Pair) LinkStats(t testing.TB, ns, dev string) LinkStats { return Stats(t, ns, dev) }

// Sub returns the counter increase from s0 to s.
func (s LinkStats) Sub(s0 LinkStats) LinkStats {
	return LinkStats{s.RxPackets - s0.RxPackets, s.RxBytes - s0.RxBytes, s.TxPackets - s0.TxPackets, s.TxBytes - s0.TxBytes}
}

func (p *Pair) mac(t testing.TB, ns, dev string) net.HardwareAddr {
	t.Helper()
	return linkIn(t, ns, dev).Attrs().HardwareAddr
}

// settle waits until the link has been quiet for half a second: bringing
// an interface up sends a few MLD reports that tests must not mistake for theirs.
func (p *Pair) settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := p.LinkStats(t, p.NSA, p.IfA)
	quietSince := time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		cur := p.LinkStats(t, p.NSA, p.IfA)
		if cur != last {
			last, quietSince = cur, time.Now()
			continue
		}
		if time.Since(quietSince) >= 500*time.Millisecond {
			return
		}
	}
}

func randID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:7]
}

// BPFFS mounts a private bpffs instance for one test and unmounts it when
// the test ends, so that pins never touch the host's /sys/fs/bpf.
func BPFFS(t testing.TB) string {
	t.Helper()
	RequireBPF(t)
	dir, err := os.MkdirTemp("", "pktstat-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(dir)
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = os.Remove(dir)
	})
	return dir
}

// TCXPrograms counts the TCX programs attached to dev, ingress and egress,
// in the namespace at nsPath (bpftool 7.1 does not list them).
func TCXPrograms(t testing.TB, nsPath, dev string) int {
	t.Helper()
	n := 0
	if err := Do(nsPath, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: at})
			if err != nil {
				return fmt.Errorf("query %s programs: %w", at, err)
			}
			n += len(res.Programs)
		}
		return nil
	}); err != nil {
		t.Fatalf("count tcx programs on %s: %v", dev, err)
	}
	return n
}
