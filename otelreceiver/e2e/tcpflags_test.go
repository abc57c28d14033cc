package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestDistributionTCPFlags: the distribution in tc mode over real TCP
// connections reports pktstatbpf.network.flow.tcp.flags per series and flag,
// through OTLP into the second collector's file, equal to the handshake
// arithmetic and to nftables' counters of the same packets.
func TestDistributionTCPFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs and runs two collectors")
	}
	p := nettest.NewPair(t)
	nft := nettest.NFTTCPFlags(t, p.NSA, p.IfA)
	const otlpPort, promPort = "14347", "19494"
	outFile, capture := startPipeline(t, p, collectorPath(t), configPath("capture.yaml"), nil, otlpPort, promPort,
		"PKTSTAT_INTERVAL=1s", "PKTSTAT_TEMPORALITY=cumulative")
	const k, refused, port, closed = 5, 3, 7301, 7399
	p.TCPExchanges(t, port, closed, k, refused)
	// Stopping flushes the last counts through the pipeline.
	capture.stop(t)
	ref := nft()

	// The last cumulative value of each series, by direction, flag and the
	// port that tells the connections apart.
	type key struct {
		dir, flag string
		port      int64
	}
	read := func() map[key]int64 {
		last := map[string]int64{}
		keys := map[string]key{}
		eachMetric(t, outFile, func(m pmetric.Metric) {
			if m.Name() != "pktstatbpf.network.flow.tcp.flags" {
				return
			}
			require.Equal(t, pmetric.AggregationTemporalityCumulative, m.Sum().AggregationTemporality())
			for i := 0; i < m.Sum().DataPoints().Len(); i++ {
				dp := m.Sum().DataPoints().At(i)
				a := dp.Attributes()
				dir, _ := a.Get("network.io.direction")
				flag, _ := a.Get("pktstatbpf.tcp.flag")
				sport, _ := a.Get("source.port")
				dport, _ := a.Get("destination.port")
				pt := dport.Int()
				if dir.Str() == "receive" {
					pt = sport.Int()
				}
				id := fmt.Sprint(a.AsRaw())
				last[id] = dp.IntValue()
				keys[id] = key{dir.Str(), flag.Str(), pt}
			}
		})
		out := map[key]int64{}
		for id, v := range last {
			out[keys[id]] += v
		}
		return out
	}
	want := map[key]int64{
		{"transmit", "syn", port}: k, {"transmit", "fin", port}: k,
		{"receive", "synack", port}: k, {"receive", "fin", port}: k,
		{"transmit", "syn", closed}: refused, {"receive", "rst", closed}: refused,
	}
	var got map[key]int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = read()
		if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, want, got, "flag points in the file exporter's output")
	sum := func(dir, flag string) (n int64) {
		for k, v := range got {
			if k.dir == dir && k.flag == flag {
				n += v
			}
		}
		return n
	}
	for _, c := range []struct{ name, dir, flag string }{
		{"out_syn", "transmit", "syn"}, {"out_synack", "transmit", "synack"}, {"out_fin", "transmit", "fin"}, {"out_rst", "transmit", "rst"},
		{"in_syn", "receive", "syn"}, {"in_synack", "receive", "synack"}, {"in_fin", "receive", "fin"}, {"in_rst", "receive", "rst"},
	} {
		require.Equal(t, int64(ref[c.name]), sum(c.dir, c.flag), "%s %s against nftables' counter %s", c.dir, c.flag, c.name)
	}
}
