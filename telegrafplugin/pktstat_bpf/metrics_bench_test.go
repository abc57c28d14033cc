package pktstat_bpf

import (
	"net/netip"
	"testing"

	"github.com/influxdata/telegraf/testutil"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
)

// BenchmarkConvert is the plugin's share of a gather: aggregation and tags
// for a table of 10000 flows that all grew.
func BenchmarkConvert(b *testing.B) {
	snap := core.Snapshot{Time: t0, Records: make([]core.Record, 10000)}
	for i := range snap.Records {
		snap.Records[i] = core.Record{
			FlowKey: core.FlowKey{Direction: core.Direction(i % 2), EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
				SrcAddr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), DstAddr: netip.MustParseAddr("10.1.0.1"),
				SrcPort: uint16(1024 + i), DstPort: 443},
			Interface: "eth0", Packets: uint64(i), Bytes: uint64(i) * 1500, DeltaPackets: 1, DeltaBytes: 1500,
		}
	}
	c, err := newConverter(aggregate.Config{}, false)
	if err != nil {
		b.Fatal(err)
	}
	var acc testutil.NopAccumulator
	b.ReportAllocs()
	for b.Loop() {
		c.add(&acc, snap)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(snap.Records)), "ns/flow")
}
