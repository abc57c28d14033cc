package core

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default
// (64 KiB there) is far below what the flow tables take; Start raises it.
// Under a 64 KiB soft limit a collector must start and count exactly, and
// where the kernel charges the limit (probed), Start must have lifted it.
func TestStartUnderLowMemlockLimit(t *testing.T) {
	nettest.RequireBPF(t)
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &orig); err != nil {
		t.Fatal(err)
	}
	// Only the soft limit is lowered: raising it back up to the hard limit
	// needs no privilege, which the host (no CAP_SYS_RESOURCE) lacks.
	low := unix.Rlimit{Cur: 64 << 10, Max: orig.Max}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &low); err != nil {
		t.Fatalf("lower RLIMIT_MEMLOCK: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &orig); err != nil {
			t.Errorf("restore RLIMIT_MEMLOCK: %v", err)
		}
	})
	charged := memlockCharged(t)
	release := kernelRelease()
	if old := kernelBefore(t, release, 5, 11); old != charged {
		t.Fatalf("kernel %s: map creation under a 64 KiB memlock limit charged=%v, want %v (memcg accounting arrived in 5.11)", release, charged, old)
	}
	t.Logf("kernel %s charges BPF maps to RLIMIT_MEMLOCK: %v", release, charged)

	p := nettest.NewPair(t)
	c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()})
	var after unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &after); err != nil {
		t.Fatal(err)
	}
	if charged && after.Cur != unix.RLIM_INFINITY {
		t.Errorf("RLIMIT_MEMLOCK after Start is %d, want unlimited on a kernel that charges it", after.Cur)
	}
	if !charged && after.Cur != low.Cur {
		t.Errorf("RLIMIT_MEMLOCK after Start is %d, want the %d it was: this kernel needs no raise", after.Cur, low.Cur)
	}
	const n, size = 40, 200
	p.SendUDP(t, n, size, 40031, 7031, false)
	rs := find(read(t, c), func(r Record) bool { return !r.Overflow && r.DstPort == 7031 })
	frame := nettest.UDPFrameLen(size, false)
	if len(rs) != 1 || rs[0].Packets != n || rs[0].Bytes != uint64(n*frame) {
		t.Fatalf("records to port 7031: %+v, want one with %d packets and %d bytes", rs, n, n*frame)
	}
}

// memlockCharged reports whether creating a 256 KiB map fails under the
// current 64 KiB limit, i.e. whether the kernel charges maps to it.
func memlockCharged(t *testing.T) bool {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 1024, MaxEntries: 256})
	if err == nil {
		m.Close()
		return false
	}
	if errors.Is(err, unix.EPERM) {
		return true
	}
	t.Fatalf("probe map under a low memlock limit: %v", err)
	return false
}

// kernelBefore reports whether release (as uname gives it) is older than major.minor.
func kernelBefore(t *testing.T, release string, major, minor int) bool {
	t.Helper()
	var ma, mi int
	if _, err := fmt.Sscanf(strings.SplitN(release, "-", 2)[0], "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("parse kernel release %q: %v", release, err)
	}
	return ma < major || ma == major && mi < minor
}

// Before 5.14 the kernel cannot look up and delete a per-CPU hash entry in
// one call, and expiry falls back to a lookup and a delete (drain.go).
// This pins down which path TestIdleFlowsExpire takes on this kernel: the
// probe must agree with the release, so the 5.10 guest runs the fallback.
func TestPerCPULookupAndDeleteMatchesKernel(t *testing.T) {
	nettest.RequireBPF(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]uint64, ncpu)
	if err := m.Put(uint32(1), vals); err != nil {
		t.Fatal(err)
	}
	err = m.LookupAndDelete(uint32(1), &vals)
	unsupported := errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL)
	if err != nil && !unsupported {
		t.Fatalf("per-CPU lookup-and-delete: %v", err)
	}
	release := kernelRelease()
	if old := kernelBefore(t, release, 5, 14); old != unsupported {
		t.Fatalf("kernel %s: per-CPU lookup-and-delete unsupported=%v (%v), want %v (it arrived in 5.14)", release, unsupported, err, old)
	}
	t.Logf("kernel %s: per-CPU lookup-and-delete unsupported=%v, so expiry uses the %s path", release, unsupported,
		map[bool]string{true: "lookup-then-delete fallback", false: "one-call"}[unsupported])
}
