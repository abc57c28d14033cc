package pktstat_bpf

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/internal/benchmem"
)

// metricAccumulator builds each telegraf.Metric as the agent's accumulator
// does (metric.New) and keeps it, so the benchmark includes the metrics'
// own cost, not only the plugin's tag building.
type metricAccumulator struct{ metrics []telegraf.Metric }

func (a *metricAccumulator) add(m string, f map[string]interface{}, t map[string]string, vt telegraf.ValueType, tm []time.Time) {
	a.metrics = append(a.metrics, metric.New(m, t, f, tm[0], vt))
}
func (a *metricAccumulator) AddFields(m string, f map[string]interface{}, t map[string]string, tm ...time.Time) {
	a.add(m, f, t, telegraf.Untyped, tm)
}
func (a *metricAccumulator) AddGauge(m string, f map[string]interface{}, t map[string]string, tm ...time.Time) {
	a.add(m, f, t, telegraf.Gauge, tm)
}
func (a *metricAccumulator) AddCounter(m string, f map[string]interface{}, t map[string]string, tm ...time.Time) {
	a.add(m, f, t, telegraf.Counter, tm)
}
func (a *metricAccumulator) AddSummary(m string, f map[string]interface{}, t map[string]string, tm ...time.Time) {
	a.add(m, f, t, telegraf.Summary, tm)
}
func (a *metricAccumulator) AddHistogram(m string, f map[string]interface{}, t map[string]string, tm ...time.Time) {
	a.add(m, f, t, telegraf.Histogram, tm)
}
func (a *metricAccumulator) AddMetric(m telegraf.Metric)                   { a.metrics = append(a.metrics, m) }
func (a *metricAccumulator) SetPrecision(time.Duration)                    {}
func (a *metricAccumulator) AddError(error)                                {}
func (a *metricAccumulator) WithTracking(int) telegraf.TrackingAccumulator { return nil }

// tableRecords is a full default-size table as core returns it: IPv4 and
// IPv6, TCP and UDP, both directions, one interface.
func tableRecords(n int) []core.Record {
	recs := make([]core.Record, n)
	start := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	for i := range recs {
		k := core.FlowKey{Ifindex: 2, Direction: core.Direction(i & 1), EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
			SrcAddr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), DstAddr: netip.MustParseAddr("192.0.2.1"),
			SrcPort: uint16(1024 + i%60000), DstPort: 443}
		if i%3 == 2 {
			k.Proto = core.ProtoUDP
		}
		if i%4 == 3 {
			k.EtherType = core.EtherTypeIPv6
			k.SrcAddr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
			k.DstAddr = netip.MustParseAddr("2001:db8:1::1")
		}
		p := uint64(1 + i%7)
		recs[i] = core.Record{FlowKey: k, Interface: "eth0", Packets: p, Bytes: p * 800, DeltaPackets: 1, DeltaBytes: 800,
			StartTime: start, LastSeen: start.Add(time.Minute)}
	}
	return recs
}

// BenchmarkTableToMetrics converts a full table of 131,072 flow records to
// telegraf metrics, as one gather does: the first gather (every series new,
// its tags rendered) and a steady gather (every series known). Run by
// `make bench`.
func BenchmarkTableToMetrics(b *testing.B) {
	const flows = 131072
	snap := core.Snapshot{Time: time.Now(), Records: tableRecords(flows)}
	// Every record grew, as after a busy interval; the converter keeps its
	// series between iterations like between gathers.
	for i := range snap.Records {
		snap.Records[i].DeltaPackets, snap.Records[i].DeltaBytes = 1, 800
	}
	convert := func(b *testing.B, conv *converter) *metricAccumulator {
		acc := &metricAccumulator{metrics: make([]telegraf.Metric, 0, flows)}
		conv.add(acc, snap)
		if len(acc.metrics) != flows {
			b.Fatalf("%d metrics for %d flows", len(acc.metrics), flows)
		}
		return acc
	}
	newConv := func(b *testing.B) *converter {
		conv, err := newConverter(aggregate.Config{}, false)
		if err != nil {
			b.Fatal(err)
		}
		return conv
	}
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			conv := newConv(b)
			b.StartTimer()
			convert(b, conv)
		}
		b.ReportMetric(flows, "flows")
	})
	b.Run("steady", func(b *testing.B) {
		before := benchmem.Live()
		conv := newConv(b)
		convert(b, conv)
		b.ReportAllocs()
		var acc *metricAccumulator
		for b.Loop() {
			acc = convert(b, conv)
		}
		b.ReportMetric(flows, "flows")
		// The converter (aggregation, templates) and one gather's metrics.
		benchmem.ReportPerFlow(b, before, flows)
		runtime.KeepAlive(conv)
		runtime.KeepAlive(acc)
	})
}
