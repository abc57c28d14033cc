package pktstatbpfreceiver

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// BenchmarkConvert measures one scrape's conversion of a full snapshot into
// pdata, the receiver's share of the work per collection_interval.
func BenchmarkConvert(b *testing.B) {
	for _, flows := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
			recs := make([]core.Record, flows)
			for i := range recs {
				k := core.FlowKey{
					Ifindex: 7, Direction: core.Direction(i % 2), EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
					SrcAddr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
					DstAddr: netip.MustParseAddr("10.255.0.1"), SrcPort: uint16(i), DstPort: 443,
				}
				recs[i] = rec(k, at(-60), 0, 0, 10, 15000)
			}
			f := &fakeSource{}
			s := newTestScraper(b, f, nil)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				md := s.convert(core.Snapshot{Time: at(i), Records: recs})
				if md.DataPointCount() < 2*flows {
					b.Fatalf("%d data points for %d flows", md.DataPointCount(), flows)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*flows), "ns/flow")
		})
	}
}
