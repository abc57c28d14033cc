package guestcheck

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// requireGuest keeps these checks out of host runs: they assert facts about
// the guest kernels that are false on the host (kernel 6.18, no kprobes).
func requireGuest(t *testing.T) {
	t.Helper()
	if os.Getenv("VMTEST_GUEST") != "1" {
		t.Skip("runs only inside the make vmtest guest (VMTEST_GUEST=1)")
	}
}

func TestKernelRelease(t *testing.T) {
	requireGuest(t)
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	// Each guest is there for its kernel's features (no TCX before 6.6, no
	// per-CPU lookup-and-delete before 5.14, memlock accounting before
	// 5.11), so booting another one would test the wrong fallbacks.
	want := os.Getenv("VMTEST_KERNEL_RELEASE")
	if want == "" {
		t.Fatal("VMTEST_KERNEL_RELEASE is not set: vmtest.sh writes it to /vmtest.conf")
	}
	if !strings.HasPrefix(release, want+".") {
		t.Fatalf("kernel release %q, want %s.*", release, want)
	}
	machine := unix.ByteSliceToString(u.Machine[:])
	wantMachine := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[os.Getenv("VMTEST_ARCH")]
	if machine != wantMachine {
		t.Fatalf("machine %q, want %q (VMTEST_ARCH=%q)", machine, wantMachine, os.Getenv("VMTEST_ARCH"))
	}
	t.Logf("kernel release %s on %s", release, machine)
}

func TestMounts(t *testing.T) {
	requireGuest(t)
	cases := []struct {
		path  string
		magic int64
	}{
		{"/sys/fs/bpf", unix.BPF_FS_MAGIC},
		{"/sys/fs/cgroup", unix.CGROUP2_SUPER_MAGIC},
		{"/sys/kernel/tracing", unix.TRACEFS_MAGIC},
		{"/sys/kernel/debug", unix.DEBUGFS_MAGIC},
	}
	for _, c := range cases {
		var st unix.Statfs_t
		if err := unix.Statfs(c.path, &st); err != nil {
			t.Errorf("statfs %s: %v", c.path, err)
			continue
		}
		if st.Type != c.magic {
			t.Errorf("%s: filesystem magic %#x, want %#x", c.path, st.Type, c.magic)
		}
	}
	if fi, err := os.Stat("/var/run/netns"); err != nil || !fi.IsDir() {
		t.Errorf("/var/run/netns is not a directory: %v", err)
	}
}

func TestKernelBTF(t *testing.T) {
	requireGuest(t)
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Fatalf("kernel BTF: %v", err)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("load kernel BTF: %v", err)
	}
	// fentry needs the hooked function's prototype, not only struct types.
	var fn *btf.Func
	if err := spec.TypeByName("tcp_sendmsg", &fn); err != nil {
		t.Fatalf("find tcp_sendmsg in kernel BTF: %v", err)
	}
}

// counterProgram returns instructions that add 1 to slot 0 of an array map;
// a counter proves the hook ran, where a successful attach alone does not.
func counterProgram(counter *ebpf.Map, ret int32) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, counter.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, ret).WithSymbol("exit"),
		asm.Return(),
	}
}

func newCounter(t *testing.T) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatalf("create counter map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func readCounter(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatalf("read counter: %v", err)
	}
	return v
}

// sendOverLoopback makes n tcp_sendmsg calls on a loopback connection.
func sendOverLoopback(t *testing.T, n int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial loopback: %v", err)
	}
	for i := 0; i < n; i++ {
		if _, err := c.Write([]byte("vmtest")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("loopback server: %v", err)
	}
}

func TestTracingHooksFire(t *testing.T) {
	requireGuest(t)
	const writes = 5
	cases := []struct {
		name   string
		spec   func(*ebpf.Map) *ebpf.ProgramSpec
		attach func(*ebpf.Program) (link.Link, error)
	}{
		{
			name: "kprobe",
			spec: func(m *ebpf.Map) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: counterProgram(m, 0)}
			},
			attach: func(p *ebpf.Program) (link.Link, error) { return link.Kprobe("tcp_sendmsg", p, nil) },
		},
		{
			name: "kretprobe",
			spec: func(m *ebpf.Map) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: counterProgram(m, 0)}
			},
			attach: func(p *ebpf.Program) (link.Link, error) { return link.Kretprobe("tcp_sendmsg", p, nil) },
		},
		{
			name: "fentry",
			spec: func(m *ebpf.Map) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry,
					AttachTo: "tcp_sendmsg", License: "GPL", Instructions: counterProgram(m, 0)}
			},
			attach: func(p *ebpf.Program) (link.Link, error) { return link.AttachTracing(link.TracingOptions{Program: p}) },
		},
		{
			name: "fexit",
			spec: func(m *ebpf.Map) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFExit,
					AttachTo: "tcp_sendmsg", License: "GPL", Instructions: counterProgram(m, 0)}
			},
			attach: func(p *ebpf.Program) (link.Link, error) { return link.AttachTracing(link.TracingOptions{Program: p}) },
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newCounter(t)
			prog, err := ebpf.NewProgram(c.spec(m))
			if err != nil {
				t.Fatalf("load %s program: %v", c.name, err)
			}
			defer prog.Close()
			l, err := c.attach(prog)
			// arm64 6.1 has no BPF trampolines (arm64 ftrace direct calls
			// arrived in 6.4); vmtest.sh declares that, and it must hold.
			if lacks := strings.Fields(os.Getenv("VMTEST_LACKS")); (c.name == "fentry" || c.name == "fexit") && slices.Contains(lacks, "fentry") {
				if err == nil {
					l.Close()
					t.Fatalf("%s on tcp_sendmsg attached, but VMTEST_LACKS says this guest has no fentry", c.name)
				}
				if !errors.Is(err, ebpf.ErrNotSupported) {
					t.Fatalf("attach %s to tcp_sendmsg: %v, want ErrNotSupported (VMTEST_LACKS=fentry)", c.name, err)
				}
				t.Logf("%s: not supported, as declared: %v", c.name, err)
				return
			}
			if err != nil {
				t.Fatalf("attach %s to tcp_sendmsg: %v", c.name, err)
			}
			defer l.Close()
			sendOverLoopback(t, writes)
			// Other senders may add calls, so the count is a lower bound.
			if got := readCounter(t, m); got < writes {
				t.Fatalf("%s on tcp_sendmsg counted %d calls, want at least %d", c.name, got, writes)
			}
		})
	}
}

// TestTCX pins down which TC path the guest exercises: core's legacy
// clsact fallback runs where TCX is missing (before 6.6), TCX where it is.
func TestTCX(t *testing.T) {
	requireGuest(t)
	m := newCounter(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: counterProgram(m, 0)})
	if err != nil {
		t.Fatalf("load tc program: %v", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Program: prog, Attach: ebpf.AttachTCXIngress, Interface: 1})
	if os.Getenv("VMTEST_TCX") == "1" {
		if err != nil {
			t.Fatalf("TCX attach on lo: %v; this guest's kernel has TCX (6.6+)", err)
		}
		l.Close()
		return
	}
	if err == nil {
		l.Close()
		t.Fatal("TCX attach on lo succeeded; the guest kernel should predate TCX (6.6)")
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("TCX attach: %v, want ErrNotSupported", err)
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestLegacyTCOnVeth builds the topology core's tests use (a veth pair across
// two namespaces made with the real iproute2) and counts pings with a cls_bpf
// program on a clsact qdisc, which needs the veth, sch_ingress and cls_bpf modules.
func TestLegacyTCOnVeth(t *testing.T) {
	requireGuest(t)
	suffix := fmt.Sprint(os.Getpid())
	nsA, nsB := "vmtest-a-"+suffix, "vmtest-b-"+suffix
	for _, ns := range []string{nsA, nsB} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "link", "add", "vta", "netns", nsA, "type", "veth", "peer", "name", "vtb", "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", "10.199.0.1/30", "dev", "vta")
	run(t, "ip", "-n", nsB, "addr", "add", "10.199.0.2/30", "dev", "vtb")
	run(t, "ip", "-n", nsA, "link", "set", "vta", "up")
	run(t, "ip", "-n", nsB, "link", "set", "vtb", "up")
	run(t, "ip", "netns", "exec", nsA, "tc", "qdisc", "add", "dev", "vta", "clsact")

	m := newCounter(t)
	// 0 is TC_ACT_OK in direct-action mode: count and pass.
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: counterProgram(m, 0)})
	if err != nil {
		t.Fatalf("load tc program: %v", err)
	}
	defer prog.Close()
	// ip netns exec mounts a fresh /sys, hiding /sys/fs/bpf from tc, so the
	// program is pinned in a bpffs of its own outside /sys.
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs at %s: %v", bpffs, err)
	}
	defer unix.Unmount(bpffs, 0)
	pin := filepath.Join(bpffs, "vmtest-tc")
	if err := prog.Pin(pin); err != nil {
		t.Fatalf("pin tc program: %v", err)
	}
	defer prog.Unpin()
	run(t, "ip", "netns", "exec", nsA, "tc", "filter", "add", "dev", "vta", "ingress",
		"bpf", "direct-action", "object-pinned", pin)
	if out := run(t, "ip", "netns", "exec", nsA, "tc", "filter", "show", "dev", "vta", "ingress"); !strings.Contains(out, "direct-action") {
		t.Fatalf("cls_bpf filter not listed on vta ingress:\n%s", out)
	}

	const pings = 3
	start := time.Now()
	run(t, "ip", "netns", "exec", nsB, "ping", "-c", fmt.Sprint(pings), "-i", "0.2", "-W", "5", "10.199.0.1")
	// ARP and IPv6 neighbour traffic may add packets; the echo requests must all be there.
	if got := readCounter(t, m); got < pings {
		t.Fatalf("cls_bpf on vta ingress counted %d packets, want at least %d", got, pings)
	}
	t.Logf("ping over veth took %v", time.Since(start))
}

// TestModuleAutoload checks that the kernel can load a module on demand, as
// on a normal host: core relies on it for sock_diag families it never names.
func TestModuleAutoload(t *testing.T) {
	requireGuest(t)
	modules, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatalf("read /proc/modules: %v", err)
	}
	if strings.Contains(string(modules), "sch_prio ") {
		t.Fatal("sch_prio is already loaded; this check needs a module nothing loaded at boot")
	}
	ns := fmt.Sprintf("vmtest-mod-%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	defer exec.Command("ip", "netns", "del", ns).Run()
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	// The prio qdisc lives in sch_prio.ko, which only the kernel's request asks for.
	run(t, "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "prio")
	modules, err = os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatalf("read /proc/modules: %v", err)
	}
	if !strings.Contains(string(modules), "sch_prio ") {
		t.Fatal("tc qdisc add prio succeeded but sch_prio is not listed in /proc/modules")
	}
}
