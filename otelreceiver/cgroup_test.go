package pktstatbpfreceiver

import (
	"bufio"
	"fmt"
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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// senderEnv holds "SRC DST N SIZE" for the re-executed sender.
const senderEnv = "PKTSTAT_OTEL_UDP_SENDER"

// udpSender sends N datagrams of SIZE bytes from SRC to DST, prints "sent",
// and waits for stdin to close so the parent can read its /proc entry.
func udpSender() int {
	f := strings.Fields(os.Getenv(senderEnv))
	n, _ := strconv.Atoi(f[2])
	size, _ := strconv.Atoi(f[3])
	conn, err := net.DialUDP("udp",
		net.UDPAddrFromAddrPort(netip.MustParseAddrPort(f[0])), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(f[1])))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer conn.Close()
	for range n {
		if _, err := conn.Write(make([]byte, size)); err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	fmt.Println("sent")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// startSender runs udpSender in namespace ns and cgroup dir, waits for
// "sent", and returns its pid; it exits when the test ends.
func startSender(t *testing.T, ns, dir string, src, dst netip.AddrPort, n, size int) int {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	require.NoError(t, err)
	defer syscall.Close(fd)
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d", senderEnv, src, dst, n, size))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	require.Equal(t, "sent\n", line)
	return cmd.Process.Pid
}

// cgroup2Mount finds the cgroup v2 mount: on hybrid hosts it is not
// /sys/fs/cgroup.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/mounts")
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" {
			return f[1]
		}
	}
	t.Fatal("no cgroup2 mount in /proc/mounts")
	return ""
}

// TestReceiverCgroupModeProcessAttributes counts in cgroup mode, where bytes
// are L3 lengths, with the opt-in process attributes turned on.
func TestReceiverCgroupModeProcessAttributes(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	p := nettest.NewPair(t)
	cg := filepath.Join(cgroup2Mount(t), "pktstat-otel-test-"+filepath.Base(t.TempDir()))
	require.NoError(t, os.Mkdir(cg, 0o755))
	t.Cleanup(func() { _ = os.Remove(cg) })
	rx := nettest.ListenUDP(t, p.NSPathB(), p.B4, 9400)

	cfg := createDefaultConfig().(*Config)
	cfg.Mode = "cgroup"
	cfg.CgroupPath = cg
	cfg.InitialDelay = 0
	cfg.CollectionInterval = time.Hour
	// The process dimensions join the defaults; the metrics record every
	// attribute the dimensions fill.
	cfg.Dimensions = append(cfg.Dimensions, aggregate.DimPID, aggregate.DimComm)
	require.NoError(t, cfg.Validate())
	sink, shutdown := startInProcess(t, cfg)

	const n, size = 17, 300
	// ip netns exec execs in place, so the sender keeps the pid we start.
	senderPID := startSender(t, p.NSA, cg, netip.AddrPortFrom(p.A4, 44000), netip.AddrPortFrom(p.B4, 9400), n, size)
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", senderPID))
	require.NoError(t, err)
	rx.Wait(t, n)

	shutdown()
	mds := sink.AllMetrics()
	require.NotEmpty(t, mds)
	type got struct {
		pid     int64
		exe     string
		packets int64
		bytes   int64
	}
	var found []got
	// The process is a workload identity: it is on the resource.
	md := mds[len(mds)-1]
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		rm := md.ResourceMetrics().At(i)
		pid, _ := rm.Resource().Attributes().Get(metadata.AttrProcessPID)
		exe, _ := rm.Resource().Attributes().Get(metadata.AttrProcessComm)
		eachFlowPoint(rm, func(m pmetric.Metric, dp pmetric.NumberDataPoint) {
			if flowLabel(dp.Attributes()) != "transmit ipv4 udp 192.0.2.1 44000 192.0.2.2 9400 " {
				return
			}
			if m.Name() == metadata.MetricPktstatbpfNetworkFlowPackets {
				found = append(found, got{pid: pid.Int(), exe: exe.Str(), packets: dp.IntValue()})
			} else {
				found = append(found, got{pid: pid.Int(), exe: exe.Str(), bytes: dp.IntValue()})
			}
		})
	}
	pid, exe := int64(senderPID), strings.TrimSpace(string(comm))
	assert.ElementsMatch(t, []got{
		{pid: pid, exe: exe, packets: n},
		{pid: pid, exe: exe, bytes: n * (20 + 8 + size)},
	}, found)
	mode, _ := mds[0].ResourceMetrics().At(0).Resource().Attributes().Get(metadata.ResourceAttrCaptureMode)
	assert.Equal(t, "cgroup", mode.Str())
}
