package pktstatbpfreceiver

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/internal/benchmem"
)

// tableRecords is a full default-size table as core returns it: IPv4 and
// IPv6, TCP and UDP, both directions, one interface.
func tableRecords(n int, start time.Time) []core.Record {
	recs := make([]core.Record, n)
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

// BenchmarkTableToPdata converts a full table of 131,072 flow records to
// pdata metrics: the first scrape (every series new) and a steady-state
// scrape (every series known). Run by `make bench`.
func BenchmarkTableToPdata(b *testing.B) {
	const flows = 131072
	recs := tableRecords(flows, at(-60))
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			s := newTestScraper(b, &fakeSource{}, nil)
			b.StartTimer()
			md := s.convert(core.Snapshot{Time: at(i), Records: recs})
			if md.DataPointCount() < 2*flows {
				b.Fatalf("%d data points for %d flows", md.DataPointCount(), flows)
			}
		}
		b.ReportMetric(flows, "flows")
	})
	b.Run("steady", func(b *testing.B) {
		before := benchmem.Live()
		s := newTestScraper(b, &fakeSource{}, nil)
		s.convert(core.Snapshot{Time: at(0), Records: recs})
		b.ReportAllocs()
		var md pmetric.Metrics
		for i := 1; b.Loop(); i++ {
			md = s.convert(core.Snapshot{Time: at(i), Records: recs})
			if md.DataPointCount() < 2*flows {
				b.Fatalf("%d data points for %d flows", md.DataPointCount(), flows)
			}
		}
		b.ReportMetric(flows, "flows")
		// The scraper (aggregation, series sets) and one scrape's metrics.
		benchmem.ReportPerFlow(b, before, flows)
		runtime.KeepAlive(s)
		runtime.KeepAlive(md)
	})
	// As the receiver scrapes by default: batches of max_points_per_batch
	// go to a consumer that is done with each when it returns (an exporter
	// without a queue), so only the last batch outlives the scrape.
	b.Run("steady-batched", func(b *testing.B) {
		before := benchmem.Live()
		s := newTestScraper(b, &fakeSource{}, nil)
		sent, batches := 0, 0
		send := func(md pmetric.Metrics) { sent += md.DataPointCount(); batches++ }
		s.convertBatched(core.Snapshot{Time: at(0), Records: recs}, defaultMaxPointsPerBatch, send)
		batches = 0
		b.ReportAllocs()
		var md pmetric.Metrics
		for i := 1; b.Loop(); i++ {
			sent = 0
			md = s.convertBatched(core.Snapshot{Time: at(i), Records: recs}, defaultMaxPointsPerBatch, send)
			if n := sent + md.DataPointCount(); n < 2*flows {
				b.Fatalf("%d data points for %d flows", n, flows)
			}
		}
		b.ReportMetric(flows, "flows")
		b.ReportMetric(float64(batches)/float64(b.N), "batches/op")
		benchmem.ReportPerFlow(b, before, flows)
		runtime.KeepAlive(s)
		runtime.KeepAlive(md)
	})
}
