package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestShimIdleExpiry: a flow idle for idle_timeout is reported with its
// final counts, then leaves; when it comes back its series starts again
// from zero (what the README tells users to expect).
func TestShimIdleExpiry(t *testing.T) {
	nettest.RequireBPF(t)
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	p := nettest.NewPair(t)
	conf := filepath.Join(t.TempDir(), "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(
		"[[inputs.pktstat_bpf]]\n  interfaces = [%q]\n  idle_timeout = \"1s\"\n", p.IfA)), 0o600))
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
	gather := func() []telegraf.Metric {
		t.Helper()
		_, err := io.WriteString(stdin, "\n")
		require.NoError(t, err)
		return gathers.next(t, 30*time.Second)
	}
	packets := func(ms []telegraf.Metric, f flow) (int64, bool) {
		m := lastSeries(ms, "pktstat_bpf", f.egressTags(p))
		if m == nil {
			return 0, false
		}
		v, _ := m.GetField("packets")
		return v.(int64), true
	}

	first := flow{n: 30, payload: 100, srcPort: 46001, dstPort: 56001}
	first.send(t, p)
	got, ok := packets(gather(), first)
	require.True(t, ok)
	require.Equal(t, int64(30), got)

	// Gather until the flow is gone; every report until then is the same
	// final count.
	var expired int64
	gone := false
	for i := 0; i < 20 && !gone; i++ {
		time.Sleep(500 * time.Millisecond)
		ms := gather()
		if got, ok := packets(ms, first); ok {
			require.Equal(t, int64(30), got, "an idle flow's counts must not change")
		} else {
			gone = true
		}
		internal := lastSeries(ms, "pktstat_bpf_internal", map[string]string{"mode": "tc"})
		v, _ := internal.GetField("expired_flows")
		expired = v.(int64)
	}
	require.True(t, gone, "the flow was still reported 10s after it went idle with idle_timeout = 1s")
	require.GreaterOrEqual(t, expired, int64(1))

	again := first
	again.n = 7
	again.send(t, p)
	got, ok = packets(gather(), again)
	require.True(t, ok)
	require.Equal(t, int64(7), got, "a returning flow starts a new series from zero")

	require.NoError(t, stdin.Close())
	proc.wait(t, 30*time.Second)
}
