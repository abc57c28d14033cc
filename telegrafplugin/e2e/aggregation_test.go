package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestTelegrafAggregation runs build/telegraf --once with dimensions, port
// folding and CIDR groups: four flows become three series whose totals are
// exact, addresses are reported as their most specific group, and the
// ephemeral source ports are folded away.
func TestTelegrafAggregation(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	conf, out := onceConfig(t, p, `
  dimensions = ["interface", "direction", "proto", "src_ip", "dst_ip", "src_port", "dst_port"]
  fold_ports = "ephemeral"
  cidr_groups = [
    {name = "testnet", cidr = "192.0.2.0/24"},
    {name = "peer", cidr = "192.0.2.2/32"},
    {name = "v6net", cidr = "2001:db8::/64"},
  ]`)

	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf, "--once", "--test-wait", fmt.Sprint(onceWait))
	proc.waitLog(t, "counting started", 60*time.Second)
	flows := []flow{
		{n: 20, payload: 100, srcPort: 40001, dstPort: 9000},
		{n: 30, payload: 200, srcPort: 40002, dstPort: 9000},
		{n: 7, payload: 50, srcPort: 40003, dstPort: 9001},
		{n: 11, payload: 400, srcPort: 40004, dstPort: 9000, v6: true},
	}
	link := sendAll(t, p, flows)
	proc.wait(t, onceWait*time.Second+60*time.Second)

	ms := readMetrics(t, out)
	tags := func(src, dst, port string) map[string]string {
		return map[string]string{"interface": p.IfA, "direction": "egress", "proto": "udp", "src_group": src, "dst_group": dst, "dst_port": port}
	}
	var totalPackets, totalBytes uint64
	for _, want := range []struct {
		tags  map[string]string
		flows []flow
	}{
		{tags("testnet", "peer", "9000"), flows[0:2]},
		{tags("testnet", "peer", "9001"), flows[2:3]},
		{tags("v6net", "v6net", "9000"), flows[3:4]},
	} {
		m := lastSeries(ms, "pktstat_bpf", want.tags)
		require.NotNil(t, m, "no series %v in:\n%s", want.tags, dump(ms))
		var packets, bytes uint64
		for _, f := range want.flows {
			packets += uint64(f.n)
			bytes += f.bytes()
		}
		require.Equal(t, map[string]interface{}{"packets": packets, "bytes": bytes}, m.Fields(), "series %v", want.tags)
		totalPackets += packets
		totalBytes += bytes
	}
	require.Equal(t, nettest.LinkStats{TxPackets: totalPackets, TxBytes: totalBytes}, link, "the series add up to what the veth sent")
	for _, m := range ms {
		require.NotContains(t, m.Tags(), "src_port", "ephemeral source ports are folded away: %v", m)
		require.NotContains(t, m.Tags(), "src_ip", "grouped addresses are reported as their group, not as an address: %v", m)
		require.NotContains(t, m.Tags(), "dst_ip", "grouped addresses are reported as their group, not as an address: %v", m)
		if g, ok := m.GetTag("src_group"); ok {
			require.Contains(t, []string{"testnet", "peer", "v6net"}, g, "addresses are reported as their group: %v", m)
		}
	}
}
