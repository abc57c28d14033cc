package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestMain lets the test binary double as the traffic source of the cgroup
// test: a child process placed in a cgroup at birth.
func TestMain(m *testing.M) {
	if os.Getenv("PKTSTAT_E2E_HELPER") == "udp-send" {
		if err := helperSend(); err != nil {
			fmt.Fprintln(os.Stderr, "udp-send:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperSend sends PKTSTAT_N datagrams of PKTSTAT_SIZE bytes from
// PKTSTAT_SRC to PKTSTAT_DST once a line arrives on stdin, then stays
// alive until stdin closes: core names a cgroup-mode flow's interface
// through the sending process's network namespace.
func helperSend() error {
	src, err := netip.ParseAddrPort(os.Getenv("PKTSTAT_SRC"))
	if err != nil {
		return err
	}
	dst, err := netip.ParseAddrPort(os.Getenv("PKTSTAT_DST"))
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(os.Getenv("PKTSTAT_N"))
	if err != nil {
		return err
	}
	size, err := strconv.Atoi(os.Getenv("PKTSTAT_SIZE"))
	if err != nil {
		return err
	}
	conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if _, err := conn.Write(make([]byte, size)); err != nil {
			return err
		}
	}
	fmt.Println("done")
	_, err = io.Copy(io.Discard, in)
	return err
}

// testCgroup creates an empty cgroup below the cgroup2 mount.
func testCgroup(t *testing.T) (abs, rel string) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/mounts")
	require.NoError(t, err)
	var mount string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" {
			mount = f[1]
			break
		}
	}
	require.NotEmpty(t, mount, "no cgroup2 mount in /proc/mounts")
	rel = "/pktstat-e2e-" + filepath.Base(t.TempDir())
	abs = mount + rel
	require.NoError(t, os.Mkdir(abs, 0o755))
	t.Cleanup(func() { _ = os.Remove(abs) })
	return abs, rel
}

// TestShimCgroupMode counts the sockets of one process in a cgroup: bytes
// are L3 lengths, and the pid, comm and cgroup tags name the sender.
func TestShimCgroupMode(t *testing.T) {
	nettest.RequireBPF(t)
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	p := nettest.NewPair(t)
	abs, rel := testCgroup(t)
	const n, size, srcPort, dstPort = 25, 300, 43001, 53001
	rx := nettest.ListenUDP(t, p.NSPathB(), p.B4, dstPort)

	conf := filepath.Join(sharedTempDir(t), "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[[inputs.pktstat_bpf]]
  mode = "cgroup"
  cgroup_path = %q
  dimensions = ["interface", "direction", "ip_version", "proto", "src_ip", "dst_ip", "src_port", "dst_port", "pid", "comm", "cgroup"]
`, abs)), 0o644))
	var stdin io.WriteCloser
	var stdout io.ReadCloser
	proc := startProcess(t, func(cmd *exec.Cmd) {
		var err error
		stdin, err = cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err = cmd.StdoutPipe()
		require.NoError(t, err)
	}, shimBin, "-config", conf, "-poll_interval_disabled")
	proc.waitLog(t, "counting started", 60*time.Second)

	// The sender is born in the cgroup (clone3 CLONE_INTO_CGROUP) and enters
	// A through ip netns exec, which execs it in place: same pid.
	fd, err := syscall.Open(abs, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	require.NoError(t, err)
	sender := exec.Command("ip", "netns", "exec", p.NSA, os.Args[0], "-test.run=^$")
	sender.Env = append(os.Environ(), "PKTSTAT_E2E_HELPER=udp-send",
		"PKTSTAT_SRC="+netip.AddrPortFrom(p.A4, srcPort).String(),
		"PKTSTAT_DST="+netip.AddrPortFrom(p.B4, dstPort).String(),
		fmt.Sprintf("PKTSTAT_N=%d", n), fmt.Sprintf("PKTSTAT_SIZE=%d", size))
	sender.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	senderIn, err := sender.StdinPipe()
	require.NoError(t, err)
	senderOut, err := sender.StdoutPipe()
	require.NoError(t, err)
	sender.Stderr = os.Stderr
	require.NoError(t, sender.Start())
	syscall.Close(fd)
	t.Cleanup(func() { senderIn.Close(); _ = sender.Wait() })
	senderLines := bufio.NewReader(senderOut)
	line, err := senderLines.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	_, err = io.WriteString(senderIn, "go\n")
	require.NoError(t, err)
	line, err = senderLines.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "done\n", line)
	rx.Wait(t, n)

	want := map[string]string{
		"interface":  p.IfA,
		"direction":  "egress",
		"ip_version": "4",
		"proto":      "udp",
		"src_ip":     p.A4.String(),
		"dst_ip":     p.B4.String(),
		"src_port":   strconv.Itoa(srcPort),
		"dst_port":   strconv.Itoa(dstPort),
		"pid":        strconv.Itoa(sender.Process.Pid),
		"comm":       "e2e.test",
		"cgroup":     rel,
	}
	_, err = io.WriteString(stdin, "\n")
	require.NoError(t, err)
	find := func(ms []telegraf.Metric) telegraf.Metric { return lastSeries(ms, "pktstat_bpf", want) }
	ms := readUntil(t, bufio.NewReader(stdout), 30*time.Second, func(ms []telegraf.Metric) bool {
		return find(ms) != nil
	})
	m := find(ms)
	// cgroup_skb sees IP packets: 20 bytes of IPv4 and 8 of UDP header, no Ethernet.
	require.Equal(t, map[string]interface{}{"packets": int64(n), "bytes": int64(n * (20 + 8 + size))}, m.Fields())

	require.NoError(t, stdin.Close())
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	proc.wait(t, 30*time.Second)
}
