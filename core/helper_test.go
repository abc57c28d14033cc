package core

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the child processes some tests need: a UDP
// sender whose pid and comm must show up in cgroup mode, and a collector
// that is killed to show the kernel detaches what it held.
func TestMain(m *testing.M) {
	// Tables of 4096 flows unless a test names a size: no test needs more, and
	// a 131,072-entry per-CPU table costs seconds to create in an emulated
	// guest. Set before the helpers too, which adopt the tests' pinned tables.
	defaultMaxFlows = 4096
	switch os.Getenv("PKTSTAT_HELPER") {
	case "udp-peer":
		os.Exit(udpPeer())
	case "tcp-peer":
		os.Exit(tcpPeer())
	case "hold-collector":
		os.Exit(holdCollector())
	}
	os.Exit(m.Run())
}

// udpPeer opens a UDP socket to PKTSTAT_DST from PKTSTAT_SRC, says "ready",
// and on each "send N SIZE" line from stdin sends N datagrams; on "recv N"
// it reads N datagrams; it answers "done" each time and exits at EOF.
func udpPeer() int {
	src, dst := netip.MustParseAddrPort(os.Getenv("PKTSTAT_SRC")), netip.MustParseAddrPort(os.Getenv("PKTSTAT_DST"))
	conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	buf := make([]byte, 65536)
	for sc.Scan() {
		var verb string
		var n, size int
		fmt.Sscan(sc.Text(), &verb, &n, &size)
		for i := 0; i < n; i++ {
			switch verb {
			case "send":
				if _, err := conn.Write(make([]byte, size)); err != nil {
					fmt.Println("error", err)
					return 1
				}
			case "recv":
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Read(buf); err != nil {
					fmt.Println("error", err)
					return 1
				}
			}
		}
		fmt.Println("done")
	}
	return 0
}

// tcpPeer connects to PKTSTAT_DST from PKTSTAT_SRC over TCP, says "ready",
// and on "send N SIZE" makes N writes of SIZE bytes, on "recv BYTES" reads
// until BYTES arrived, on "recvall BYTES" reads them with one blocking
// MSG_WAITALL recv; it answers "done K", K the system calls that moved data
// ("retrans" answers the socket's tcpi_total_retrans as K).
func tcpPeer() int {
	src, dst := netip.MustParseAddrPort(os.Getenv("PKTSTAT_SRC")), netip.MustParseAddrPort(os.Getenv("PKTSTAT_DST"))
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src)}
	c, err := d.Dial("tcp", dst.String())
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	conn := c.(*net.TCPConn)
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	buf := make([]byte, 65536)
	for sc.Scan() {
		var verb string
		var n, size, calls int
		fmt.Sscan(sc.Text(), &verb, &n, &size)
		switch verb {
		case "send":
			for i := 0; i < n; i++ {
				if _, err := conn.Write(make([]byte, size)); err != nil {
					fmt.Println("error", err)
					return 1
				}
				calls++
			}
		case "recv":
			for got := 0; got < n; {
				k, err := conn.Read(buf[:n-got])
				if err != nil {
					fmt.Println("error", err)
					return 1
				}
				got += k
				calls++
			}
		case "recvall":
			raw, err := conn.SyscallConn()
			if err == nil {
				cerr := raw.Control(func(fd uintptr) {
					// Blocking, so that MSG_WAITALL waits inside one recv.
					if err = syscall.SetNonblock(int(fd), false); err == nil {
						var k int
						k, _, err = syscall.Recvfrom(int(fd), buf[:n], syscall.MSG_WAITALL)
						if err == nil && k != n {
							err = fmt.Errorf("recv returned %d of %d bytes", k, n)
						}
					}
				})
				err = errors.Join(err, cerr)
			}
			if err != nil {
				fmt.Println("error", err)
				return 1
			}
			calls = 1
		case "retrans":
			// Not a data call: K is the socket's tcpi_total_retrans.
			var info *unix.TCPInfo
			if err := withFD(conn, func(fd int) (err error) {
				info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
				return err
			}); err != nil {
				fmt.Println("error", err)
				return 1
			}
			calls = int(info.Total_retrans)
		}
		fmt.Println("done", calls)
	}
	return 0
}

func holdCollector() int {
	c, err := New(Config{
		Mode:       Mode(os.Getenv("PKTSTAT_MODE")),
		Interfaces: []string{os.Getenv("PKTSTAT_IFACE")},
		NetNS:      os.Getenv("PKTSTAT_NETNS"),
		legacyTC:   os.Getenv("PKTSTAT_LEGACY") == "1",
		PinPath:    os.Getenv("PKTSTAT_PIN"),
	})
	if err == nil {
		err = c.Start(context.Background())
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("attached")
	time.Sleep(time.Minute)
	return 0
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// lanesOf is how many values one entry of m holds: one per possible CPU in
// a per-CPU map, one in the shared flow and retransmit tables.
func lanesOf(t testing.TB, m *ebpf.Map) int {
	t.Helper()
	n, err := valueLanes(m)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// kernelLacks reports whether PKTSTAT_KERNEL_LACKS names feature: make
// vmtest declares there, per guest (vmtest.sh guest_spec), what its kernel
// does not have (drop_reason, fentry, tcx, cgroup_test_run_data).
func kernelLacks(feature string) bool {
	return feature != "" && slices.Contains(strings.Fields(os.Getenv("PKTSTAT_KERNEL_LACKS")), feature)
}

// skipLacking skips a test whose kernel feature is missing, where a skip is
// allowed: outside CI, or where PKTSTAT_KERNEL_LACKS declares the feature
// missing. With PKTSTAT_REQUIRE_BPF=1 and no such declaration it fails, so a
// kernel that loses a feature cannot pass CI by skipping.
func skipLacking(t *testing.T, feature, format string, args ...any) {
	t.Helper()
	if os.Getenv("PKTSTAT_REQUIRE_BPF") == "1" && !kernelLacks(feature) {
		t.Fatalf("PKTSTAT_REQUIRE_BPF=1 and PKTSTAT_KERNEL_LACKS=%q does not name %s, but "+format,
			append([]any{os.Getenv("PKTSTAT_KERNEL_LACKS"), feature}, args...)...)
	}
	t.Skipf(format, args...)
}

// checkNotDeclaredLacking fails when the kernel has a feature that
// PKTSTAT_KERNEL_LACKS says it lacks: a stale declaration would let the
// feature's tests skip where they could run.
func checkNotDeclaredLacking(t *testing.T, feature string) {
	t.Helper()
	if kernelLacks(feature) {
		t.Fatalf("this kernel has %s, but PKTSTAT_KERNEL_LACKS=%q says it does not", feature, os.Getenv("PKTSTAT_KERNEL_LACKS"))
	}
}

// programName is the name of the loaded program id; ok is false when it
// was unloaded meanwhile.
func programName(t *testing.T, id ebpf.ProgramID) (name string, ok bool) {
	t.Helper()
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return "", false
	}
	info, err := p.Info()
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	return info.Name, true
}

// loadedProgramNames lists the names of every program loaded in the kernel,
// by whatever process (ownPrograms: only this one's).
func loadedProgramNames(t *testing.T) []string {
	t.Helper()
	var names []string
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		id = next
		if name, ok := programName(t, id); ok {
			names = append(names, name)
		}
	}
}

// ownPrograms returns the names of the programs this test process holds a
// descriptor of, its own or a link's (the prog_id of /proc/self/fdinfo), by
// ID: what this test's collectors loaded, whatever other processes on the
// machine load meanwhile (a collector started by hand once failed a
// system-wide count here).
func ownPrograms(t *testing.T) map[ebpf.ProgramID]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	out := map[ebpf.ProgramID]string{}
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // closed meanwhile (ReadDir's own descriptor)
		}
		for _, line := range strings.Split(string(b), "\n") {
			v, ok := strings.CutPrefix(line, "prog_id:")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			id := ebpf.ProgramID(n)
			if _, seen := out[id]; err != nil || id == 0 || seen {
				continue
			}
			if name, ok := programName(t, id); ok {
				out[id] = name
			}
		}
	}
	return out
}

// ownProgramsNamed returns the IDs of this process's programs (ownPrograms)
// that have one of names.
func ownProgramsNamed(t *testing.T, names ...string) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for id, name := range ownPrograms(t) {
		if slices.Contains(names, name) {
			ids = append(ids, id)
		}
	}
	return ids
}

// waitUnloaded waits up to 5 s for the kernel to free the programs ids
// (it frees a detached program after an RCU grace period) and fails t with
// what of them is still loaded.
func waitUnloaded(t *testing.T, what string, ids []ebpf.ProgramID) {
	t.Helper()
	loaded := func() (n int) {
		for _, id := range ids {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for loaded() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := loaded(); n > 0 {
		t.Errorf("5 s after Close: %d of the %d %s programs still loaded", n, len(ids), what)
	}
}
