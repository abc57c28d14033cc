package pktstat_bpf

import (
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

func dropsOf(acc *testutil.Accumulator) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == dropMeasurement {
			out = append(out, m)
		}
	}
	return out
}

// Drop records become pktstat_bpf_drops series: the flow tags plus reason,
// reasons kept apart, overflow drops tagged as such; flows are unchanged.
func TestDropSeries(t *testing.T) {
	k := udp4("", core.Ingress, "192.0.2.1", "192.0.2.2", 40000, 53)
	unknown := k
	unknown.Direction = core.DirectionUnknown
	snap := core.Snapshot{Time: t0,
		Records: first(core.Record{FlowKey: k, Interface: "veth0", Packets: 10, Bytes: 1000}),
		Drops: first(
			core.Record{FlowKey: k, Interface: "veth0", Packets: 4, Bytes: 344, DropReason: "no_socket"},
			core.Record{FlowKey: k, Interface: "veth0", Packets: 2, Bytes: 172, DropReason: "netfilter_drop"},
			core.Record{FlowKey: unknown, Interface: "veth0", Packets: 1, Bytes: 86, DropReason: "netfilter_drop"},
			core.Record{FlowKey: core.FlowKey{Direction: core.Ingress}, Interface: "veth0", Overflow: true, Packets: 3, Bytes: 300, DropReason: "no_socket"},
		)}
	f := &fakeSource{snapshots: []core.Snapshot{snap}}
	p := withFake(&PktstatBPF{Drops: true}, f)
	require.NoError(t, p.Init())
	var acc testutil.Accumulator
	require.NoError(t, p.Start(&acc))
	require.True(t, f.cfg.Drops, "drops reaches core")
	require.NoError(t, p.Gather(&acc))
	flow := map[string]string{"interface": "veth0", "direction": "ingress", "ip_version": "4", "proto": "udp",
		"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "src_port": "40000", "dst_port": "53"}
	with := func(tags map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range tags {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	drop := func(tags map[string]string, packets, bytes uint64) telegraf.Metric {
		return metric.New(dropMeasurement, tags, map[string]interface{}{"packets": packets, "bytes": bytes}, t0, telegraf.Counter)
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		drop(with(flow, "reason", "no_socket"), 4, 344),
		drop(with(flow, "reason", "netfilter_drop"), 2, 172),
		drop(with(flow, "reason", "netfilter_drop", "direction", "unknown"), 1, 86),
		drop(map[string]string{"interface": "veth0", "direction": "ingress", "overflow": "true", "reason": "no_socket"}, 3, 300),
	}, dropsOf(&acc), testutil.SortMetrics())
	var flows []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurement {
			flows = append(flows, m)
		}
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{counter(flow, 10, 1000, t0)}, flows)
}

// The plugin on the real kernel: N datagrams to a port with no socket in
// B show up as one pktstat_bpf_drops series with reason no_socket and
// exactly N packets of their L3 length.
func TestDropsOnKernel(t *testing.T) {
	p := nettest.NewPair(t)
	in := &PktstatBPF{Interfaces: []string{p.IfB}, NetNS: p.NSPathB(), Drops: true, Log: testutil.Logger{}}
	require.NoError(t, in.Init())
	var acc testutil.Accumulator
	if err := in.Start(&acc); err != nil {
		if errors.Is(err, core.ErrNotSupported) && os.Getenv("PKTSTAT_REQUIRE_BPF") != "1" {
			t.Skipf("kernel feature missing: %v", err)
		}
		t.Fatal(err)
	}
	defer in.Stop()
	const n, size, sport, dport = 64, 300, 41201, 7201
	p.SendUDPNoWait(t, n, size, sport, dport)
	want := map[string]string{"interface": p.IfB, "direction": "ingress", "ip_version": "4", "proto": "udp",
		"src_ip": p.A4.String(), "dst_ip": p.B4.String(), "src_port": strconv.Itoa(sport), "dst_port": strconv.Itoa(dport), "reason": "no_socket"}
	var got telegraf.Metric
	deadline := time.Now().Add(5 * time.Second)
	for got == nil || got.Fields()["packets"].(uint64) < n {
		require.False(t, time.Now().After(deadline), "no %d no_socket drops within 5 s: %v", n, dropsOf(&acc))
		time.Sleep(50 * time.Millisecond)
		acc.ClearMetrics()
		require.NoError(t, in.Gather(&acc))
		got = nil
		for _, m := range dropsOf(&acc) {
			if m.Tags()["dst_port"] == want["dst_port"] {
				require.Nil(t, got, "two drop series for one flow: %v", dropsOf(&acc))
				got = m
			}
		}
	}
	require.Equal(t, want, got.Tags())
	require.Equal(t, map[string]interface{}{"packets": uint64(n), "bytes": uint64(n * (nettest.IPv4HeaderLen + nettest.UDPHeaderLen + size))}, got.Fields())
	require.Equal(t, telegraf.Counter, got.Type())
}
