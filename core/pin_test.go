package core

import (
	"bufio"
	"context"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// pinCase is one capture mode whose state pin_path keeps.
type pinCase struct {
	name   string
	cfg    func(p *nettest.Pair) Config
	fromB  bool // traffic B->A (ingress on A), for xdp
	legacy bool
}

var pinCases = []pinCase{
	{name: "tcx", cfg: func(p *nettest.Pair) Config {
		return Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()}
	}},
	{name: "legacy-tc", legacy: true, cfg: func(p *nettest.Pair) Config {
		return Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), legacyTC: true}
	}},
	{name: "xdp", fromB: true, cfg: func(p *nettest.Pair) Config {
		return Config{Mode: ModeXDP, XDPMode: XDPGeneric, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()}
	}},
}

// With pin_path, Close leaves the programs counting into pinned maps, the
// next Start adopts them, and the flow's series goes on: same start time,
// the packets sent while no collector ran included, nothing attached twice.
// RemovePinned then removes it all.
func TestPinPathKeepsCountingAcrossRestart(t *testing.T) {
	for _, tc := range pinCases {
		t.Run(tc.name, func(t *testing.T) {
			p := nettest.NewPair(t)
			cfg := tc.cfg(p)
			cfg.PinPath = filepath.Join(nettest.BPFFS(t), "pktstat-bpf", p.IfA)
			send := p.SendUDP
			dir := Egress
			if tc.fromB {
				send, dir = p.SendUDPFromB, Ingress
			}
			flow := func(s Snapshot) []Record {
				return find(s, func(r Record) bool { return !r.Overflow && r.DstPort == 7201 && r.Direction == dir })
			}
			want := map[Mode]int{ModeTC: 2, ModeXDP: 1}[cfg.Mode]
			frame := uint64(nettest.UDPFrameLen(100, false))

			c1 := startCollector(t, cfg)
			send(t, 10, 100, 41201, 7201, false)
			first := flow(read(t, c1))
			if len(first) != 1 || first[0].Packets != 10 {
				t.Fatalf("first run: %+v, want 10 packets", first)
			}
			if err := c1.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got := attachedPrograms(t, p.NSA, p.IfA); got != want {
				t.Fatalf("%d programs attached after Close with pin_path, want %d still counting", got, want)
			}
			checkPinModes(t, cfg.PinPath)

			send(t, 7, 100, 41201, 7201, false) // while no collector runs

			var logs syncBuffer
			cfg.Logger = bufferLogger(&logs)
			c2 := startCollector(t, cfg)
			if got := attachedPrograms(t, p.NSA, p.IfA); got != want {
				t.Errorf("%d programs attached after the restart, want %d (adopted, not attached again)", got, want)
			}
			// Without TCX (before 6.6) tc mode is legacy on its own: filters are replaced, not adopted.
			legacy := tc.legacy || cfg.Mode == ModeTC && !haveTCX(t)
			if !legacy && !strings.Contains(logs.String(), "adopted_pinned="+itoa(want)) {
				t.Errorf("restart did not adopt %d pinned links:\n%s", want, logs.String())
			}
			send(t, 5, 100, 41201, 7201, false)
			s := read(t, c2)
			again := flow(s)
			if len(again) != 1 || again[0].Packets != 22 || again[0].Bytes != 22*frame {
				t.Fatalf("after restart: %+v, want the series to go on: 22 packets, %d bytes", again, 22*frame)
			}
			if !again[0].StartTime.Equal(first[0].StartTime) {
				t.Errorf("start time %v after restart, want %v kept", again[0].StartTime, first[0].StartTime)
			}
			if again[0].DeltaPackets != 22 {
				t.Errorf("first delta after restart %d, want 22: the gap's packets are in the first report", again[0].DeltaPackets)
			}
			if s.Health.HooksNotFirst() != 0 {
				t.Errorf("adopted hooks not first: %+v", s.Health.Hooks)
			}
			if err := c2.Close(); err != nil {
				t.Fatal(err)
			}
			if err := RemovePinned(cfg); err != nil {
				t.Fatalf("remove pinned state: %v", err)
			}
			// The kernel frees a link whose last pin went in a work item.
			waitFor(t, func() bool { return attachedPrograms(t, p.NSA, p.IfA) == 0 }, "RemovePinned to detach everything")
			if _, err := os.Stat(cfg.PinPath); !os.IsNotExist(err) {
				t.Errorf("pin_path still there after RemovePinned: %v", err)
			}
		})
	}
}

// checkPinModes asserts every directory under root is 0700 and every pin
// 0600, all owned by us.
func checkPinModes(t *testing.T, root string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		} else {
			n++
		}
		if fi.Mode().Perm() != want || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
			t.Errorf("%s: mode %#o uid %d, want %#o and ours", path, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid, want)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walk %s: %v (%d pins)", root, err, n)
	}
}

// A pin_path holding another layout (here: another max_flows) is replaced,
// with one log line, and its links are detached rather than left counting.
func TestPinPathReplacesIncompatibleLayout(t *testing.T) {
	p := nettest.NewPair(t)
	cfg := Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), MaxFlows: 1024, PinPath: filepath.Join(nettest.BPFFS(t), "pin")}
	c1 := startCollector(t, cfg)
	p.SendUDP(t, 4, 64, 41202, 7202, false)
	c1.Close()
	old, _ := os.ReadDir(cfg.PinPath)

	var logs syncBuffer
	cfg.MaxFlows, cfg.Logger = 2048, bufferLogger(&logs)
	c2 := startCollector(t, cfg)
	if got := strings.Count(logs.String(), "replacing pinned state of an incompatible build"); got != 1 {
		t.Errorf("%d log lines about replacing the pinned state, want 1:\n%s", got, logs.String())
	}
	waitFor(t, func() bool { return attachedPrograms(t, p.NSA, p.IfA) == 2 }, "the old layout's links to be detached (2 programs left)")
	now, _ := os.ReadDir(cfg.PinPath)
	if len(old) != 1 || len(now) != 1 || old[0].Name() == now[0].Name() {
		t.Errorf("layout directories before %v and after %v, want one each, different", old, now)
	}
	p.SendUDP(t, 3, 64, 41202, 7202, false)
	rs := find(read(t, c2), func(r Record) bool { return r.DstPort == 7202 && r.Direction == Egress })
	if len(rs) != 1 || rs[0].Packets != 3 {
		t.Errorf("after replacement %+v, want a fresh series of 3 packets", rs)
	}
	if s := read(t, c2); s.Health.Capacity != 2048 {
		t.Errorf("capacity %d, want 2048", s.Health.Capacity)
	}
	c2.Close()
	if err := RemovePinned(cfg); err != nil {
		t.Fatal(err)
	}
}

// Pinned flow data is private: a pin_path that is not on bpffs, is readable
// by others, is owned by someone else, or is held by a running instance is
// refused at Start with a message that says what to do.
func TestPinPathRefusesUnsafeOrBusy(t *testing.T) {
	p := nettest.NewPair(t)
	fsRoot := nettest.BPFFS(t)
	base := Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()}
	wide := filepath.Join(fsRoot, "wide")
	other := filepath.Join(fsRoot, "other")
	for _, d := range []string{wide, other} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(wide, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"not-bpffs", filepath.Join(t.TempDir(), "pins"), "is not on a bpffs mount"},
		{"wide-mode", wide, "with mode 0755: pinned flow data must be private"},
		{"other-owner", other, "is owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.PinPath = tc.path
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Start(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v, want an error containing %q", err, tc.want)
			}
			if got := attachedPrograms(t, p.NSA, p.IfA); got != 0 {
				t.Errorf("%d programs attached after a refused pin_path", got)
			}
		})
	}
	t.Run("foreign-pins", func(t *testing.T) {
		// Another tool's pin where pktstat-bpf would remove state: refused,
		// and the pin is left alone.
		dir := filepath.Join(fsRoot, "shared")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "cilium_ct4", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		foreign := filepath.Join(dir, "cilium_ct4")
		if err := m.Pin(foreign); err != nil {
			t.Fatal(err)
		}
		cfg := base
		cfg.PinPath = dir
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want := "holds objects pktstat-bpf did not create (cilium_ct4): give pktstat-bpf a directory of its own"
		if err := c.Start(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("start: %v, want %q", err, want)
		}
		if err := RemovePinned(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("RemovePinned: %v, want %q", err, want)
		}
		if _, err := os.Stat(foreign); err != nil {
			t.Errorf("the foreign pin is gone: %v", err)
		}
	})
	t.Run("second-instance", func(t *testing.T) {
		cfg := base
		cfg.PinPath = filepath.Join(fsRoot, "busy")
		startCollector(t, cfg)
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "in use by another running pktstat-bpf instance") {
			t.Fatalf("second instance: %v", err)
		}
		if err := RemovePinned(cfg); err == nil || !strings.Contains(err.Error(), "stop it first") {
			t.Errorf("RemovePinned while running: %v", err)
		}
	})
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{PinPath: "relative/dir"}, `pin_path "relative/dir" is not an absolute path`},
		{Config{Mode: ModeKprobe, PinPath: "/sys/fs/bpf/x"}, "pin_path is not supported in kprobe mode"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate %+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// Under continuous traffic, a collector killed with SIGKILL and one stopped
// and started again lose nothing with pin_path: the final cumulative count
// of the flow equals what the receiver got, with one start time throughout.
func TestPinPathSurvivesKillUnderTraffic(t *testing.T) {
	p := nettest.NewPair(t)
	cfg := Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), PinPath: filepath.Join(nettest.BPFFS(t), "kill")}
	// 1: a child process holds the capture and is killed with SIGKILL;
	// traffic starts once it has attached.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PKTSTAT_HELPER=hold-collector", "PKTSTAT_MODE=tc", "PKTSTAT_IFACE="+p.IfA,
		"PKTSTAT_NETNS="+p.NSPathA(), "PKTSTAT_PIN="+cfg.PinPath)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "attached" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q", line)
	}
	stream := p.StartStream(t, 80, 41203, 7203, 2*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	time.Sleep(300 * time.Millisecond) // nobody runs

	// 2: a collector here, stopped and started again.
	var start time.Time
	for i := 0; i < 2; i++ {
		c := startCollector(t, cfg)
		time.Sleep(300 * time.Millisecond)
		rs := find(read(t, c), func(r Record) bool { return r.DstPort == 7203 && r.Direction == Egress })
		if len(rs) != 1 {
			t.Fatalf("run %d: %+v, want one flow", i, rs)
		}
		if i == 0 {
			start = rs[0].StartTime
		} else if !rs[0].StartTime.Equal(start) {
			t.Errorf("run %d: start time %v, want %v throughout", i, rs[0].StartTime, start)
		}
		c.Close()
		time.Sleep(200 * time.Millisecond)
	}
	n := stream.Stop(t)
	c := startCollector(t, cfg)
	rs := find(read(t, c), func(r Record) bool { return r.DstPort == 7203 && r.Direction == Egress })
	if n < 200 || len(rs) != 1 || rs[0].Packets != uint64(n) || rs[0].Bytes != uint64(n*nettest.UDPFrameLen(80, false)) {
		t.Fatalf("sent %d datagrams (and the receiver got them all); the flow says %+v", n, rs)
	}
	if !rs[0].StartTime.Equal(start) {
		t.Errorf("final start time %v, want %v", rs[0].StartTime, start)
	}
	t.Logf("%d datagrams across a SIGKILL and two restarts, all counted in one series", n)
	c.Close()
	if err := RemovePinned(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return attachedPrograms(t, p.NSA, p.IfA) == 0 }, "RemovePinned to detach everything")
}

// Cgroup mode with pin_path: the cgroup links and the socket owners stay,
// the peer's sends while no collector runs are counted, and the series of
// the peer's flow (pid and comm included) goes on with its start time.
func TestPinPathCgroupMode(t *testing.T) {
	p := nettest.NewPair(t)
	abs, _ := testCgroup(t)
	rx := nettest.ListenUDP(t, p.NSPathB(), p.B4, 7204)
	cfg := Config{Mode: ModeCgroup, CgroupPath: abs, PinPath: filepath.Join(nettest.BPFFS(t), "cg")}
	c1 := startCollector(t, cfg)
	pr := startPeer(t, abs, p.NSA, netip.AddrPortFrom(p.A4, 41204), netip.AddrPortFrom(p.B4, 7204))
	flow := func(s Snapshot) []Record {
		return find(s, func(r Record) bool { return !r.Overflow && r.Direction == Egress && r.DstPort == 7204 })
	}
	pr.do(t, "send 11 150")
	rx.Wait(t, 11)
	first := flow(read(t, c1))
	if len(first) != 1 || first[0].Packets != 11 || first[0].PID != uint32(pr.cmd.Process.Pid) {
		t.Fatalf("first run %+v, want 11 packets from pid %d", first, pr.cmd.Process.Pid)
	}
	c1.Close()
	if got := cgroupPrograms(t, abs); got != 4 {
		t.Fatalf("%d programs on the cgroup after Close with pin_path, want 4", got)
	}
	pr.do(t, "send 6 150")
	rx.Wait(t, 6)
	c2 := startCollector(t, cfg)
	if got := cgroupPrograms(t, abs); got != 4 {
		t.Errorf("%d programs on the cgroup after restart, want 4 (adopted)", got)
	}
	again := flow(read(t, c2))
	l3 := uint64(20 + 8 + 150)
	if len(again) != 1 || again[0].Packets != 17 || again[0].Bytes != 17*l3 || again[0].PID != first[0].PID ||
		!again[0].StartTime.Equal(first[0].StartTime) {
		t.Fatalf("after restart %+v, want the same series (pid %d, start %v) with 17 packets, %d bytes",
			again, first[0].PID, first[0].StartTime, 17*l3)
	}
	c2.Close()
	if err := RemovePinned(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return cgroupPrograms(t, abs) == 0 }, "RemovePinned to detach the cgroup programs")
}

// cgroupPrograms counts the programs attached to the cgroup directory for
// the four hooks cgroup mode uses, asked of the kernel directly: bpftool
// 7.1's `cgroup show -j` exits 255 with an empty list on Linux 5.10 while
// programs are attached.
func cgroupPrograms(t *testing.T, dir string) int {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInetIngress, ebpf.AttachCGroupInetEgress,
		ebpf.AttachCGroupInetSockCreate, ebpf.AttachCgroupInetSockRelease} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			t.Fatalf("query %s programs on %s: %v", at, dir, err)
		}
		n += len(res.Programs)
	}
	return n
}

// While no collector runs nothing expires flows, and a table that fills
// spills into the pinned overflow counters: after the restart the totals
// still equal what the interface sent.
func TestPinPathOverflowWhileDown(t *testing.T) {
	p := nettest.NewPair(t)
	cfg := Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), MaxFlows: 16, PinPath: filepath.Join(nettest.BPFFS(t), "ov")}
	c1 := startCollector(t, cfg)
	read(t, c1)
	c1.Close()
	before := p.LinkStats(t, p.NSA, p.IfA)
	const flows = 40
	p.SendUDPToPorts(t, flows, 23000, 30)
	waitFor(t, func() bool { return p.LinkStats(t, p.NSA, p.IfA).Sub(before).TxPackets == flows }, "the veth to send every datagram")
	c2 := startCollector(t, cfg)
	s := read(t, c2)
	link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
	var tp, tb, op uint64
	for _, r := range s.Records {
		if r.Direction != Egress {
			continue
		}
		tp += r.Packets
		tb += r.Bytes
		if r.Overflow {
			op += r.Packets
		}
	}
	if tp != link.TxPackets || tb != link.TxBytes || op < flows-16 {
		t.Errorf("egress totals %d packets %d bytes (overflow %d); the veth sent %d and %d, at least %d flows did not fit",
			tp, tb, op, link.TxPackets, link.TxBytes, flows-16)
	}
	c2.Close()
	if err := RemovePinned(cfg); err != nil {
		t.Fatal(err)
	}
}

// Filters are configuration, not state: a restart with other filters keeps
// the pinned counts (same layout) and the new filters take effect at once.
func TestPinPathKeepsCountsAcrossFilterChange(t *testing.T) {
	p := nettest.NewPair(t)
	cfg := Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), PinPath: filepath.Join(nettest.BPFFS(t), "flt")}
	c1 := startCollector(t, cfg)
	p.SendUDP(t, 6, 64, 41205, 7205, false)
	first := find(read(t, c1), func(r Record) bool { return r.DstPort == 7205 && r.Direction == Egress && !r.Filtered })
	c1.Close()
	layouts, _ := os.ReadDir(cfg.PinPath)

	cfg.Filters = Filters{ExcludePorts: []string{"7206"}}
	c2 := startCollector(t, cfg)
	if now, _ := os.ReadDir(cfg.PinPath); len(layouts) != 1 || len(now) != 1 || now[0].Name() != layouts[0].Name() {
		t.Fatalf("layout directories %v then %v: a filter change must not replace the pinned state", layouts, now)
	}
	p.SendUDP(t, 4, 64, 41205, 7205, false)
	p.SendUDP(t, 3, 64, 41206, 7206, false)
	s := read(t, c2)
	kept := find(s, func(r Record) bool { return r.DstPort == 7205 && r.Direction == Egress && !r.Filtered })
	if len(first) != 1 || len(kept) != 1 || kept[0].Packets != 10 || !kept[0].StartTime.Equal(first[0].StartTime) {
		t.Errorf("kept flow %+v after the restart, want 10 packets since %v", kept, first)
	}
	if rs := find(s, func(r Record) bool { return r.DstPort == 7206 }); len(rs) != 0 {
		t.Errorf("the newly excluded port still has its own flow: %+v", rs)
	}
	var filtered uint64
	for _, r := range find(s, func(r Record) bool { return r.Filtered && r.Direction == Egress }) {
		filtered += r.Packets
	}
	if filtered < 3 {
		t.Errorf("%d egress packets in the filtered series, want the 3 to the excluded port", filtered)
	}
	c2.Close()
	if err := RemovePinned(cfg); err != nil {
		t.Fatal(err)
	}
}
