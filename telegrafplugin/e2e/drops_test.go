package e2e

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestTelegrafDrops runs build/telegraf --once with drops = true on A's veth
// end and sends datagrams from B to a port of A with no socket: the output
// holds one pktstat_bpf_drops series with reason no_socket and exactly their
// packets and L3 bytes, beside the tc ingress series of the same packets.
func TestTelegrafDrops(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	conf, out := onceConfig(t, p, `
  drops = true`)

	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf, "--once", "--test-wait", fmt.Sprint(onceWait))
	proc.waitLog(t, "counting started", 60*time.Second)
	const n, size, sport, dport = 25, 200, 41401, 7401
	// B sends to A, where the plugin watches.
	fromB := *p
	fromB.NSA, fromB.NSB, fromB.A4, fromB.B4 = p.NSB, p.NSA, p.B4, p.A4
	fromB.SendUDPNoWait(t, n, size, sport, dport)
	proc.wait(t, onceWait*time.Second+60*time.Second)

	ms := readMetrics(t, out)
	flowTags := map[string]string{"interface": p.IfA, "direction": "ingress", "ip_version": "4", "proto": "udp",
		"src_ip": p.B4.String(), "dst_ip": p.A4.String(), "src_port": fmt.Sprint(sport), "dst_port": fmt.Sprint(dport)}
	dropTags := maps.Clone(flowTags)
	dropTags["reason"] = "no_socket"
	drop := lastSeries(ms, "pktstat_bpf_drops", dropTags)
	require.NotNil(t, drop, "no drop series %v in:\n%s", dropTags, dump(ms))
	require.Equal(t, map[string]interface{}{"packets": uint64(n), "bytes": uint64(n * (nettest.IPv4HeaderLen + nettest.UDPHeaderLen + size))},
		drop.Fields())
	flow := lastSeries(ms, "pktstat_bpf", flowTags)
	require.NotNil(t, flow, "no tc ingress series %v in:\n%s", flowTags, dump(ms))
	require.Equal(t, map[string]interface{}{"packets": uint64(n), "bytes": uint64(n * nettest.UDPFrameLen(size, false))}, flow.Fields())
}
