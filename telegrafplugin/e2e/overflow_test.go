package e2e

import (
	"bufio"
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

// TestShimOverflowConserves fills a 16-flow table with 200 flows: the
// flows that do not fit must land in overflow series, and all egress series
// together must still equal what A's interface transmitted.
func TestShimOverflowConserves(t *testing.T) {
	nettest.RequireBPF(t)
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	p := nettest.NewPair(t)
	conf := filepath.Join(sharedTempDir(t), "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[[inputs.pktstat_bpf]]\n  interfaces = [%q]\n  max_flows = 16\n", p.IfA)), 0o644))

	// The link counters are read from before the attachment to just before
	// the gather, so that any stray IPv6 multicast report A sends in between
	// is on both sides.
	before := p.LinkStats(t, p.NSA, p.IfA)
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

	const ports, payload = 200, 50
	p.SendUDPToPorts(t, ports, 20000, payload)
	link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
	require.GreaterOrEqual(t, link.TxPackets, uint64(ports))

	_, err := io.WriteString(stdin, "\n")
	require.NoError(t, err)
	// The internal metric closes each gather.
	ms := readUntil(t, bufio.NewReader(stdout), 30*time.Second, func(ms []telegraf.Metric) bool {
		return lastSeries(ms, "pktstat_bpf_internal", map[string]string{"mode": "tc"}) != nil
	})
	internal := lastSeries(ms, "pktstat_bpf_internal", map[string]string{"mode": "tc"})

	var egressPackets, egressBytes, overflowPackets, overflowBytes, overflowEgress int64
	flows := 0
	for _, m := range ms {
		if m.Name() != "pktstat_bpf" || !m.Time().Equal(internal.Time()) {
			continue
		}
		packets, _ := m.GetField("packets")
		bytes, _ := m.GetField("bytes")
		if m.Tags()["overflow"] == "true" {
			overflowPackets += packets.(int64)
			overflowBytes += bytes.(int64)
			if m.Tags()["direction"] == "egress" {
				overflowEgress += packets.(int64)
			}
		} else {
			flows++
		}
		if m.Tags()["direction"] == "egress" {
			egressPackets += packets.(int64)
			egressBytes += bytes.(int64)
		}
	}
	require.Equal(t, []int64{int64(link.TxPackets), int64(link.TxBytes)}, []int64{egressPackets, egressBytes},
		"egress series must add up to the interface's own counters:\n%s", dump(ms))
	require.LessOrEqual(t, flows, 16, "more flow series than the table holds")
	require.GreaterOrEqual(t, overflowEgress, int64(ports-16), "flows beyond the table must be in overflow series")
	op, _ := internal.GetField("overflow_packets")
	ob, _ := internal.GetField("overflow_bytes")
	require.Equal(t, []interface{}{overflowPackets, overflowBytes}, []interface{}{op, ob},
		"pktstat_bpf_internal must agree with the overflow series")

	require.NoError(t, stdin.Close())
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	proc.wait(t, 30*time.Second)
}
