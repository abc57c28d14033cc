package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestShimDimensions: with fewer dimensions, flows are summed into the
// series they share, and the sum is exact.
func TestShimDimensions(t *testing.T) {
	nettest.RequireBPF(t)
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	p := nettest.NewPair(t)
	conf := filepath.Join(t.TempDir(), "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(
		"[[inputs.pktstat_bpf]]\n  interfaces = [%q]\n  dimensions = [\"interface\", \"direction\", \"proto\"]\n", p.IfA)), 0o600))
	var stdin io.WriteCloser
	var stdout io.ReadCloser
	proc := startProcess(t, func(cmd *exec.Cmd) {
		var err error
		stdin, err = cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err = cmd.StdoutPipe()
		require.NoError(t, err)
	}, "ip", "netns", "exec", p.NSA, shimBin, "-config", conf, "-poll_interval_disabled")
	proc.waitLog(t, "counting started", 60*time.Second)
	gathers := newGatherReader(stdout)

	flows := []flow{
		{n: 11, payload: 100, srcPort: 47001, dstPort: 57001},
		{n: 13, payload: 300, srcPort: 47002, dstPort: 57002, v6: true},
		{n: 17, payload: 10, srcPort: 47003, dstPort: 57003},
	}
	link := sendAll(t, p, flows)
	_, err := io.WriteString(stdin, "\n")
	require.NoError(t, err)
	ms := gathers.next(t, 30*time.Second)

	m := lastSeries(ms, "pktstat_bpf", map[string]string{"interface": p.IfA, "direction": "egress", "proto": "udp"})
	require.NotNil(t, m, "no summed udp egress series in:\n%s", dump(ms))
	var packets, bytes int64
	for _, f := range flows {
		packets += int64(f.n)
		bytes += int64(f.bytes())
	}
	require.Equal(t, map[string]interface{}{"packets": packets, "bytes": bytes}, m.Fields())
	require.Equal(t, nettest.LinkStats{TxPackets: uint64(packets), TxBytes: uint64(bytes)}, link)
	for _, m := range ms {
		for _, tag := range []string{"src_ip", "dst_ip", "src_port", "dst_port", "ip_version"} {
			require.NotContains(t, m.Tags(), tag, "dimension %s was not asked for: %v", tag, m)
		}
	}
	require.NoError(t, stdin.Close())
	proc.wait(t, 30*time.Second)
}
