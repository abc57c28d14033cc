package pktstatbpfreceiver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// rttHistograms calls fn with every pktstatbpf.network.flow.tcp.rtt point in md.
func rttHistograms(md pmetric.Metrics, fn func(pmetric.HistogramDataPoint)) {
	eachMetric(md, func(m pmetric.Metric) {
		if m.Name() == metadata.MetricPktstatbpfNetworkFlowTCPRTT {
			for l := 0; l < m.Histogram().DataPoints().Len(); l++ {
				fn(m.Histogram().DataPoints().At(l))
			}
		}
	})
}

// rttPoints returns the RTT points in md, keyed by their attributes.
func rttPoints(md pmetric.Metrics) map[string]pmetric.HistogramDataPoint {
	out := map[string]pmetric.HistogramDataPoint{}
	rttHistograms(md, func(dp pmetric.HistogramDataPoint) { out[attrString(dp.Attributes())] = dp })
	return out
}

type rttPoint struct {
	count         uint64
	sum, min, max float64
	buckets       []uint64
}

func pointOf(dp pmetric.HistogramDataPoint) rttPoint {
	return rttPoint{dp.Count(), dp.Sum(), dp.Min(), dp.Max(), dp.BucketCounts().AsRaw()}
}

// TestRTTHistogramMetric: pktstatbpf.network.flow.tcp.rtt has a point only
// for series with samples: cumulative from the series' start (counts and
// sums add, min and max over the whole time) or per window, with the
// explicit bounds of core.RTTBucketBounds in seconds.
func TestRTTHistogramMetric(t *testing.T) {
	k := udp4(core.Egress, 40000, 443)
	k.Proto = core.ProtoTCP
	ms := time.Millisecond
	// bucket of d in core.RTTBucketBounds: 1 ms is index 4, 2 ms 5, 10 ms 7.
	tcp := func(prevP, dp uint64, rtt core.RTTStats) core.Record {
		r := rec(k, at(1), prevP, prevP*100, dp, dp*100)
		if rtt.Samples > 0 {
			r.RTT = &rtt
		}
		return r
	}
	first := core.RTTStats{Samples: 2, Sum: 3 * ms, Min: ms, Max: 2 * ms, Buckets: [core.RTTBuckets]uint64{4: 1, 5: 1}}
	second := core.RTTStats{Samples: 1, Sum: 10 * ms, Min: 10 * ms, Max: 10 * ms, Buckets: [core.RTTBuckets]uint64{7: 1}}
	dns := rec(udp4(core.Egress, 40001, 53), at(1), 0, 0, 1, 80)
	snaps := []core.Snapshot{
		{Time: at(10), Records: []core.Record{tcp(0, 5, first), dns}},
		{Time: at(20), Records: []core.Record{tcp(5, 4, second)}},
		{Time: at(30), Records: []core.Record{tcp(9, 1, core.RTTStats{})}},
	}
	label := "map[destination.address:192.0.2.2 destination.port:443 network.interface.name:veth0 network.io.direction:transmit " +
		"network.transport:tcp network.type:ipv4 source.address:192.0.2.1 source.port:40000]"
	buckets := func(idx ...int) []uint64 {
		b := make([]uint64, core.RTTBuckets)
		for _, i := range idx {
			b[i]++
		}
		return b
	}
	both := rttPoint{3, 0.013, 0.001, 0.010, buckets(4, 5, 7)}
	for _, tc := range []struct {
		temporality string
		want        []map[string]rttPoint
	}{
		{TemporalityCumulative, []map[string]rttPoint{
			{label: {2, 0.003, 0.001, 0.002, buckets(4, 5)}}, {label: both}, {label: both}}},
		{TemporalityDelta, []map[string]rttPoint{
			{label: {2, 0.003, 0.001, 0.002, buckets(4, 5)}}, {label: {1, 0.010, 0.010, 0.010, buckets(7)}}, {}}},
	} {
		t.Run(tc.temporality, func(t *testing.T) {
			s := newTestScraper(t, &fakeSource{snaps: snaps}, func(c *Config) { c.Temporality, c.TCPRTT = tc.temporality, true })
			for i, md := range scrapeN(t, s, len(snaps)) {
				got := map[string]rttPoint{}
				for k, dp := range rttPoints(md) {
					p := pointOf(dp)
					// Sums of float seconds: compare to the microsecond.
					p.sum = float64(time.Duration(p.sum*1e9).Round(time.Microsecond)) / 1e9
					got[k] = p
					assert.Equal(t, metadata.RTTBoundsSeconds(), dp.ExplicitBounds().AsRaw())
					if tc.temporality == TemporalityCumulative {
						assert.Equal(t, pcommon.NewTimestampFromTime(at(1)), dp.StartTimestamp())
					} else {
						assert.Equal(t, pcommon.NewTimestampFromTime(at(10*i)), dp.StartTimestamp())
					}
				}
				assert.Equal(t, tc.want[i], got, "scrape %d", i+1)
			}
		})
	}
}

// TestLoadConfigTCPRTT: tcp_rtt reaches core, and the RTT metric takes an
// attributes list like the other flow metrics.
func TestLoadConfigTCPRTT(t *testing.T) {
	cfg := loadConfig(t, component.NewIDWithName(metadata.Type, "tcp_rtt"))
	require.NoError(t, confmap.Validate(cfg))
	assert.True(t, cfg.coreConfig(nil).TCPRTT)
	assert.Equal(t, []string{"network.io.direction", "source.address", "destination.address"}, cfg.Metrics.PktstatbpfNetworkFlowTCPRTT.Attributes)
}

// TestReceiverTCPHealth runs the receiver on a real kernel in tc mode with
// tcp_rtt and the retransmits metric on: after induced loss, the client's
// transmit series has exactly the socket's tcpi_total_retrans as
// pktstatbpf.network.flow.tcp.retransmits, and an RTT histogram whose
// samples are all in the buckets, min no lower than tcpi_min_rtt and
// min <= mean <= max < 200 ms.
func TestReceiverTCPHealth(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	nettest.RequireBPF(t)
	nettest.RequireTracepoints(t, "tcp_probe", "tcp_retransmit_skb")
	p := nettest.NewPair(t)
	cfg := createDefaultConfig().(*Config)
	cfg.Interfaces = []string{p.IfA}
	cfg.NetNS = p.NSPathA()
	cfg.TCPRTT = true
	cfg.Metrics.PktstatbpfNetworkFlowTCPRetransmits.Enabled = true
	cfg.InitialDelay = 0
	cfg.CollectionInterval = 100 * time.Millisecond
	sink, shutdown := startInProcess(t, cfg)

	cli, srvAddr := netip.AddrPortFrom(p.A4, 43051), netip.AddrPortFrom(p.B4, 7351)
	conn, retrans := p.LossyExchange(t, cli, srvAddr, 20)
	info := nettest.TCPInfo(t, conn)
	shutdown()

	mds := sink.AllMetrics()
	require.NotEmpty(t, mds)
	last := mds[len(mds)-1] // cumulative: the last batch has every total
	client := "transmit ipv4 tcp 192.0.2.1 43051 192.0.2.2 7351 "
	assert.Equal(t, int64(retrans), flowTotals([]pmetric.Metrics{last}, metadata.MetricPktstatbpfNetworkFlowTCPRetransmits, p.IfA)[client],
		"retransmits vs tcpi_total_retrans %d", retrans)
	var found bool
	rttHistograms(last, func(dp pmetric.HistogramDataPoint) {
		if flowLabel(dp.Attributes()) != client {
			return
		}
		found = true
		var n uint64
		for _, c := range dp.BucketCounts().AsRaw() {
			n += c
		}
		mean := dp.Sum() / float64(dp.Count())
		t.Logf("retransmits %d; rtt count %d min %.6f s mean %.6f s max %.6f s; tcpi_min_rtt %d us",
			retrans, dp.Count(), dp.Min(), mean, dp.Max(), info.Min_rtt)
		assert.Equal(t, dp.Count(), n, "bucket counts")
		assert.GreaterOrEqual(t, dp.Min(), float64(info.Min_rtt)/1e6, "min below tcpi_min_rtt")
		assert.True(t, dp.Count() > 0 && dp.Min() <= mean && mean <= dp.Max() && dp.Max() < 0.2, "min %f mean %f max %f", dp.Min(), mean, dp.Max())
	})
	assert.True(t, found, "no RTT point for %s", client)
}
