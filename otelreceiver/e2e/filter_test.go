package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestDistributionFilters: the distribution with an exclude of one port and
// an include of one CIDR (testdata/otel/capture-filtered.yaml) reports the
// remaining flows exactly, the filtered series holds exactly the rest, and
// all series together equal the veth's counters, through OTLP into the
// second collector's file.
func TestDistributionFilters(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs and runs two collectors")
	}
	p := nettest.NewPair(t)
	const otlpPort, promPort = "14337", "19484"
	outFile, capture := startPipeline(t, p, collectorPath(t), configPath("capture-filtered.yaml"), nil, otlpPort, promPort)
	// The link counters span the counting, so that a packet the kernel
	// sends on its own meanwhile (an IPv6 MLD report) is on both sides.
	before := p.LinkStats(t, p.NSA, p.IfA)

	const kept1, kept2, port, outside = 30, 12, 17, 9
	p.SendUDP(t, kept1, 200, 41000, 9100, false)
	p.SendUDP(t, kept2, 100, 41001, 9101, false)
	p.SendUDP(t, port, 300, 41002, 9103, false)   // the excluded port
	p.SendUDP(t, outside, 400, 41003, 9100, true) // outside the included CIDR
	// Stopping flushes the last counts through the pipeline.
	capture.stop(t)
	link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)

	frame := func(n, payload int, v6 bool) int64 { return int64(n * nettest.UDPFrameLen(payload, v6)) }
	flowSeries := func(sport, dport int) string {
		return fmt.Sprint(map[string]any{
			"network.interface.name": p.IfA, "network.io.direction": "transmit", "network.type": "ipv4", "network.transport": "udp",
			"source.address": "192.0.2.1", "destination.address": "192.0.2.2", "source.port": int64(sport), "destination.port": int64(dport),
		})
	}
	keptP, keptB := int64(kept1+kept2), frame(kept1, 200, false)+frame(kept2, 100, false)
	restP, restB := int64(link.TxPackets)-keptP, int64(link.TxBytes)-keptB
	require.InDelta(t, port+outside, restP, 4, "the veth sent %d packets beyond the kept flows, the test sent %d left-out ones", restP, port+outside)
	require.GreaterOrEqual(t, restP, int64(port+outside))
	want := map[string]flowCounts{
		flowSeries(41000, 9100): {kept1, frame(kept1, 200, false)},
		flowSeries(41001, 9101): {kept2, frame(kept2, 100, false)},
		"filtered transmit":     {restP, restB},
	}
	if link.RxPackets > 0 {
		want["filtered receive"] = flowCounts{int64(link.RxPackets), int64(link.RxBytes)}
	}
	label := func(a pcommon.Map) string {
		if f, ok := a.Get("pktstatbpf.filtered"); ok && f.Bool() {
			dir, _ := a.Get("network.io.direction")
			iface, _ := a.Get("network.interface.name")
			require.Equal(t, p.IfA, iface.Str(), "filtered series attributes %v", a.AsRaw())
			require.Equal(t, 3, a.Len(), "a filtered series carries only interface, direction and the marker: %v", a.AsRaw())
			return "filtered " + dir.Str()
		}
		return fmt.Sprint(a.AsRaw())
	}
	var got map[string]flowCounts
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ = readFileExportBy(t, outFile, pmetric.AggregationTemporalityCumulative, label)
		if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, want, got, "series in the file exporter's output")
}
