package core

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// peer is a udpPeer child process placed in a cgroup and a namespace.
type peer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startPeer(t *testing.T, cgroupDir, ns string, src, dst netip.AddrPort) *peer {
	t.Helper()
	fd, err := syscall.Open(cgroupDir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	// ip netns exec execs the test binary in place: the pid stays the same.
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PKTSTAT_HELPER=udp-peer", "PKTSTAT_SRC="+src.String(), "PKTSTAT_DST="+dst.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start peer: %v", err)
	}
	p := &peer{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	p.expect(t, "ready")
	return p
}

func (p *peer) expect(t *testing.T, want string) {
	t.Helper()
	line, err := p.out.ReadString('\n')
	if strings.TrimSpace(line) != want {
		t.Fatalf("peer said %q (%v), want %q", line, err, want)
	}
}

func (p *peer) do(t *testing.T, cmd string) {
	t.Helper()
	fmt.Fprintln(p.in, cmd)
	p.expect(t, "done")
}

func testCgroup(t *testing.T) (abs, rel string) {
	t.Helper()
	mount, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel = "/pktstat-test-" + filepath.Base(t.TempDir())
	abs = mount + rel
	if err := os.Mkdir(abs, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(abs) })
	return abs, rel
}

// Cgroup mode counts L3 bytes per socket owner, in both directions, for a
// socket created after start (sock_create) and one that already existed
// (seeded from sock_diag and /proc).
func TestCgroupModeAttributesProcesses(t *testing.T) {
	nettest.RequireBPF(t)
	p := nettest.NewPair(t)
	abs, rel := testCgroup(t)
	rxOld := nettest.ListenUDP(t, p.NSPathB(), p.B4, 7101)
	rxNew := nettest.ListenUDP(t, p.NSPathB(), p.B6, 7102)

	old := startPeer(t, abs, p.NSA, netip.AddrPortFrom(p.A4, 41001), netip.AddrPortFrom(p.B4, 7101))
	c := startCollector(t, Config{Mode: ModeCgroup, CgroupPath: abs})
	young := startPeer(t, abs, p.NSA, netip.AddrPortFrom(p.A6, 41002), netip.AddrPortFrom(p.B6, 7102))

	old.do(t, "send 40 200")
	young.do(t, "send 30 500")
	rxOld.Wait(t, 40)
	rxNew.Wait(t, 30)
	// Answers from B to each peer's socket: cgroup ingress.
	for i := 0; i < 12; i++ {
		if _, err := rxOld.WriteToUDPAddrPort(make([]byte, 100), netip.AddrPortFrom(p.A4, 41001)); err != nil {
			t.Fatal(err)
		}
	}
	old.do(t, "recv 12")
	s := read(t, c)

	for _, want := range []struct {
		name  string
		pr    *peer
		dir   Direction
		port  uint16
		n, l3 int
		v6    bool
	}{
		{"existing socket egress", old, Egress, 7101, 40, 20 + 8 + 200, false},
		{"existing socket ingress", old, Ingress, 7101, 12, 20 + 8 + 100, false},
		{"new socket egress", young, Egress, 7102, 30, 40 + 8 + 500, true},
	} {
		rs := find(s, func(r Record) bool {
			return !r.Overflow && r.Direction == want.dir && (r.DstPort == want.port || r.SrcPort == want.port)
		})
		if len(rs) != 1 {
			t.Errorf("%s: want one flow, got %+v", want.name, rs)
			continue
		}
		r := rs[0]
		if r.Packets != uint64(want.n) || r.Bytes != uint64(want.n*want.l3) {
			t.Errorf("%s: %d packets %d bytes, want %d and %d (L3 lengths)", want.name, r.Packets, r.Bytes, want.n, want.n*want.l3)
		}
		if r.PID != uint32(want.pr.cmd.Process.Pid) || r.Comm != "core.test" {
			t.Errorf("%s: pid %d comm %q, want %d %q", want.name, r.PID, r.Comm, want.pr.cmd.Process.Pid, "core.test")
		}
		if r.CgroupPath != rel || r.CgroupID == 0 {
			t.Errorf("%s: cgroup %d %q, want %q", want.name, r.CgroupID, r.CgroupPath, rel)
		}
		if r.Interface != p.IfA || (r.IPVersion() == 6) != want.v6 {
			t.Errorf("%s: interface %q v%d, want %s", want.name, r.Interface, r.IPVersion(), p.IfA)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bpftool", "cgroup", "show", abs).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" && strings.Count(string(out), "\n") > 1 {
		t.Errorf("after Close, bpftool cgroup show %s: %v\n%s", abs, err, out)
	}
}
