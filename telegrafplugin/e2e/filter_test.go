package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestTelegrafFilters runs build/telegraf --once with an exclude of one port
// and an include of one CIDR: the flows that remain are exact, the filtered
// series holds exactly the rest, and together they equal what the veth sent.
func TestTelegrafFilters(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	conf, out := onceConfig(t, p, `
  include_cidrs = ["192.0.2.0/24"]
  exclude_ports = ["9003"]`)

	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf, "--once", "--test-wait", fmt.Sprint(onceWait))
	proc.waitLog(t, "counting started", 60*time.Second)
	// The link counters span the counting, so that a packet the kernel
	// sends on its own meanwhile (an IPv6 MLD report) is on both sides.
	before := p.LinkStats(t, p.NSA, p.IfA)
	kept := []flow{
		{n: 20, payload: 100, srcPort: 40001, dstPort: 9000},
		{n: 13, payload: 300, srcPort: 40002, dstPort: 9001},
	}
	left := []flow{
		{n: 17, payload: 200, srcPort: 40003, dstPort: 9003},           // the excluded port
		{n: 11, payload: 400, srcPort: 40004, dstPort: 9000, v6: true}, // outside the included CIDR
	}
	sendAll(t, p, append(append([]flow{}, kept...), left...))
	proc.wait(t, onceWait*time.Second+60*time.Second)
	link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)

	ms := readMetrics(t, out)
	var egressPackets, egressBytes uint64
	series := 0
	// --once gathers once, right after the start, and Stop drains a last
	// time: the gather may already hold the first flows (the traffic starts
	// once counting has), so the sums are the last drain's cumulative
	// counts, which hold every series.
	for _, m := range lastDrain(ms, "pktstat_bpf") {
		if m.Tags()["direction"] != "egress" {
			continue
		}
		series++
		packets, _ := m.GetField("packets")
		bytes, _ := m.GetField("bytes")
		egressPackets += packets.(uint64)
		egressBytes += bytes.(uint64)
	}
	// One metric per egress series.
	require.Equal(t, len(kept)+1, series, "want the kept flows and one filtered series:\n%s", dump(ms))
	for _, f := range kept {
		m := lastSeries(ms, "pktstat_bpf", f.egressTags(p))
		require.NotNil(t, m, "no series %v in:\n%s", f.egressTags(p), dump(ms))
		require.Equal(t, map[string]interface{}{"packets": uint64(f.n), "bytes": f.bytes()}, m.Fields(), "flow %+v", f)
	}
	// The rest: the left-out flows, and what the veth sent beyond the
	// test's traffic (outside the included CIDR, so filtered too).
	restPackets, restBytes := link.TxPackets, link.TxBytes
	for _, f := range kept {
		restPackets -= uint64(f.n)
		restBytes -= f.bytes()
	}
	var leftPackets uint64
	for _, f := range left {
		leftPackets += uint64(f.n)
	}
	require.InDelta(t, leftPackets, restPackets, 4, "the veth sent %d packets beyond the kept flows, the test sent %d left-out ones", restPackets, leftPackets)
	m := lastSeries(ms, "pktstat_bpf", map[string]string{"interface": p.IfA, "direction": "egress", "filtered": "true"})
	require.NotNil(t, m, "no filtered series in:\n%s", dump(ms))
	require.Equal(t, map[string]interface{}{"packets": restPackets, "bytes": restBytes}, m.Fields(), "the filtered series holds the rest")
	require.GreaterOrEqual(t, restPackets, leftPackets)
	require.Equal(t, nettest.LinkStats{TxPackets: egressPackets, TxBytes: egressBytes}, link, "all series add up to what the veth sent")
}
