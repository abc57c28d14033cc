package pktstatbpfreceiver

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// flowTotals sums the points of metric per (direction, source port) over
// every batch in mds: in delta temporality that is the total, in cumulative
// temporality it only makes sense over one batch.
func flowTotals(mds []pmetric.Metrics, metric, iface string) map[string]int64 {
	out := map[string]int64{}
	eachPoint(mds, metric, func(dp pmetric.NumberDataPoint) {
		attrs := dp.Attributes()
		if name, _ := attrs.Get(metadata.AttrNetworkInterfaceName); name.Str() == iface {
			out[flowLabel(attrs)] += dp.IntValue()
		}
	})
	return out
}

// eachPoint calls fn for every point of the sum metric in mds.
func eachPoint(mds []pmetric.Metrics, metric string, fn func(pmetric.NumberDataPoint)) {
	for _, md := range mds {
		eachMetric(md, func(m pmetric.Metric) {
			if m.Name() == metric {
				for l := 0; l < m.Sum().DataPoints().Len(); l++ {
					fn(m.Sum().DataPoints().At(l))
				}
			}
		})
	}
}

// flowLabel names a point by the attributes the tests tell flows apart by.
func flowLabel(attrs pcommon.Map) string {
	s := ""
	for _, k := range []string{
		metadata.AttrNetworkIODirection, metadata.AttrNetworkType, metadata.AttrNetworkTransport,
		metadata.AttrSourceAddress, metadata.AttrSourceGroup, metadata.AttrSourcePort,
		metadata.AttrDestinationAddress, metadata.AttrDestinationGroup, metadata.AttrDestinationPort,
	} {
		if v, ok := attrs.Get(k); ok {
			s += v.AsString()
			// A group is written with its CIDR: group(cidr).
			cidr := map[string]string{metadata.AttrSourceGroup: metadata.AttrSourceCIDR, metadata.AttrDestinationGroup: metadata.AttrDestinationCIDR}[k]
			if c, ok := attrs.Get(cidr); ok && cidr != "" {
				s += "(" + c.AsString() + ")"
			}
			s += " "
		}
	}
	return s
}

// mldReport is the label of the MLDv2 reports the kernel itself sends when
// the veth's IPv6 addresses join their multicast groups. Their timing is
// random (up to about 2 s after link up), so one may cross the veth while
// a test runs; they are the only traffic besides the test's own.
const mldReport = "transmit ipv6 ipv6-icmp :: ff02::16 "

// withoutMLD drops the kernel's MLD reports and returns the rest.
func withoutMLD(t *testing.T, totals map[string]int64) map[string]int64 {
	t.Helper()
	if n, ok := totals[mldReport]; ok {
		t.Logf("ignoring %d of kernel MLD report traffic", n)
		delete(totals, mldReport)
	}
	return totals
}

// TestReceiverCountsRealTraffic attaches the receiver to a veth pair in
// throw-away namespaces and checks the exact packets and bytes of the UDP
// datagrams the test sent, both ways, in both temporalities. Every other
// series on the veth fails the test, except the kernel's MLD reports.
func TestReceiverCountsRealTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	for _, temporality := range []string{TemporalityCumulative, TemporalityDelta} {
		t.Run(temporality, func(t *testing.T) {
			p := nettest.NewPair(t)
			cfg := createDefaultConfig().(*Config)
			cfg.Interfaces = []string{p.IfA}
			cfg.NetNS = p.NSPathA()
			cfg.Temporality = temporality
			cfg.InitialDelay = 0
			// Scrapes run while traffic flows; the last partial interval
			// comes from the shutdown flush.
			cfg.CollectionInterval = 50 * time.Millisecond
			sink, shutdown := startInProcess(t, cfg)

			p.SendUDP(t, 40, 100, 40000, 9000, false)
			p.SendUDP(t, 25, 600, 40001, 9001, true)
			p.SendUDPFromB(t, 7, 50, 40002, 9002, false)

			shutdown()
			mds := sink.AllMetrics()
			require.NotEmpty(t, mds)
			if temporality == TemporalityCumulative {
				// The last batch holds every series' total.
				mds = mds[len(mds)-1:]
			}
			out4 := "transmit ipv4 udp 192.0.2.1 40000 192.0.2.2 9000 "
			out6 := "transmit ipv6 udp 2001:db8::1 40001 2001:db8::2 9001 "
			in4 := "receive ipv4 udp 192.0.2.2 40002 192.0.2.1 9002 "
			wantPackets := map[string]int64{out4: 40, out6: 25, in4: 7}
			wantBytes := map[string]int64{
				out4: 40 * int64(nettest.UDPFrameLen(100, false)),
				out6: 25 * int64(nettest.UDPFrameLen(600, true)),
				in4:  7 * int64(nettest.UDPFrameLen(50, false)),
			}
			assert.Equal(t, wantPackets, withoutMLD(t, flowTotals(mds, metadata.MetricPktstatbpfNetworkFlowPackets, p.IfA)))
			assert.Equal(t, wantBytes, withoutMLD(t, flowTotals(mds, metadata.MetricPktstatbpfNetworkFlowBytes, p.IfA)))
			// The kernel tables: the flow table's 160 bytes a flow, the
			// drain's walk array's 96 (where the kernel has
			// bpf_for_each_map_elem) and the retransmit table's 192
			// (where the kernel has the hook), whatever the CPU count, and
			// the small per-CPU tables.
			limit, kmem := lastInt(mds, metadata.MetricPktstatbpfFlowLimit), lastInt(mds, metadata.MetricPktstatbpfKernelMemoryUsage)
			assert.Equal(t, int64(core.DefaultMaxFlows), limit)
			assert.GreaterOrEqual(t, kmem, limit*160, "kernel memory for a table of %d flows", limit)
			assert.Less(t, kmem, limit*(160+96+192)+int64(8+runtime.NumCPU())<<20, "kernel memory for a table of %d flows", limit)
		})
	}
}

// lastInt is the last int value of the metric called name in mds (0 if none).
func lastInt(mds []pmetric.Metrics, name string) int64 {
	var v int64
	eachPoint(mds, name, func(dp pmetric.NumberDataPoint) { v = dp.IntValue() })
	return v
}

// TestReceiverRestartsExpiredFlow: a flow that idles out of the kernel table,
// and whose series then ends after series_idle_timeout without growth, is a
// new series with a new start time when it comes back, counting from zero,
// never a reset of the old one.
func TestReceiverRestartsExpiredFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	p := nettest.NewPair(t)
	cfg := createDefaultConfig().(*Config)
	cfg.Interfaces = []string{p.IfA}
	cfg.NetNS = p.NSPathA()
	cfg.InitialDelay = 0
	cfg.CollectionInterval = 100 * time.Millisecond
	cfg.IdleTimeout = 500 * time.Millisecond
	cfg.SeriesIdleTimeout = aggregate.Duration(500 * time.Millisecond)
	sink := new(consumertest.MetricsSink)
	rcv, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	defer func() { require.NoError(t, rcv.Shutdown(context.Background())) }()

	const label = "transmit ipv4 udp 192.0.2.1 42000 192.0.2.2 9200 "
	// latest returns the flow's point in the newest batch, if it has one.
	latest := func() (start time.Time, packets int64, ok bool) {
		mds := sink.AllMetrics()
		if len(mds) == 0 {
			return time.Time{}, 0, false
		}
		md := mds[len(mds)-1]
		ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		for k := 0; k < ms.Len(); k++ {
			m := ms.At(k)
			if m.Name() != metadata.MetricPktstatbpfNetworkFlowPackets {
				continue
			}
			for l := 0; l < m.Sum().DataPoints().Len(); l++ {
				dp := m.Sum().DataPoints().At(l)
				if flowLabel(dp.Attributes()) == label {
					return dp.StartTimestamp().AsTime(), dp.IntValue(), true
				}
			}
		}
		return time.Time{}, 0, false
	}

	p.SendUDP(t, 5, 100, 42000, 9200, false)
	var start1 time.Time
	require.Eventually(t, func() bool {
		s, n, ok := latest()
		start1 = s
		return ok && n == 5
	}, 5*time.Second, 20*time.Millisecond, "first series never reached 5 packets")

	// After the idle timeouts the series is no longer reported.
	require.Eventually(t, func() bool { _, _, ok := latest(); return !ok }, 10*time.Second, 20*time.Millisecond,
		"the series did not end after series_idle_timeout")

	secondSend := time.Now()
	p.SendUDP(t, 3, 100, 42000, 9200, false)
	var start2 time.Time
	var n2 int64
	require.Eventually(t, func() bool {
		s, n, ok := latest()
		start2, n2 = s, n
		return ok && n == 3
	}, 5*time.Second, 20*time.Millisecond, "second series never reached 3 packets (last: %d)", n2)
	assert.True(t, start2.After(start1), "second start %s not after first %s", start2, start1)
	assert.False(t, start2.Before(secondSend.Add(-time.Second)), "second start %s is not when the flow returned (%s)", start2, secondSend)
}

// TestReceiverConservesOverflow fills the smallest kernel table: the flows
// that do not fit are counted in the overflow series, and the sum over all
// transmit series is exactly what the test sent.
func TestReceiverConservesOverflow(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	p := nettest.NewPair(t)
	cfg := createDefaultConfig().(*Config)
	cfg.Interfaces = []string{p.IfA}
	cfg.NetNS = p.NSPathA()
	cfg.InitialDelay = 0
	cfg.CollectionInterval = 100 * time.Millisecond
	cfg.MaxFlows = 16
	sink, shutdown := startInProcess(t, cfg)

	const ports, payload = 64, 32
	p.SendUDPToPorts(t, ports, 20000, payload)
	// Nothing listens on B, so only the transmit side is the test's traffic
	// (B answers with rate-limited ICMP errors).
	sums := func(md pmetric.Metrics) (pkts, bytes, overflowPkts int64, overflowSeries int) {
		ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		for k := 0; k < ms.Len(); k++ {
			m := ms.At(k)
			if m.Name() != metadata.MetricPktstatbpfNetworkFlowPackets && m.Name() != metadata.MetricPktstatbpfNetworkFlowBytes {
				continue
			}
			for l := 0; l < m.Sum().DataPoints().Len(); l++ {
				dp := m.Sum().DataPoints().At(l)
				if dir, _ := dp.Attributes().Get(metadata.AttrNetworkIODirection); dir.Str() != "transmit" {
					continue
				}
				if flowLabel(dp.Attributes()) == mldReport {
					continue
				}
				_, overflow := dp.Attributes().Get(metadata.AttrOverflow)
				if m.Name() == metadata.MetricPktstatbpfNetworkFlowBytes {
					bytes += dp.IntValue()
					continue
				}
				pkts += dp.IntValue()
				if overflow {
					overflowPkts += dp.IntValue()
					overflowSeries++
				}
			}
		}
		return
	}
	wantBytes := int64(ports * nettest.UDPFrameLen(payload, false))
	var pkts, bytes, overflowPkts int64
	var overflowSeries int
	require.Eventually(t, func() bool {
		mds := sink.AllMetrics()
		if len(mds) == 0 {
			return false
		}
		pkts, bytes, overflowPkts, overflowSeries = sums(mds[len(mds)-1])
		return pkts == ports && bytes == wantBytes
	}, 10*time.Second, 20*time.Millisecond, "transmit totals: %d packets, %d bytes", pkts, bytes)
	shutdown()
	assert.Equal(t, 1, overflowSeries, "one overflow series for the veth's transmit side")
	// A 16-entry table cannot hold 64 flows: at least 48 went to overflow.
	assert.GreaterOrEqual(t, overflowPkts, int64(ports-16))
}

// TestReceiverXDPMode counts in xdp mode, which sees ingress only, with the
// same L2 byte count as tc.
func TestReceiverXDPMode(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	p := nettest.NewPair(t)
	cfg := createDefaultConfig().(*Config)
	cfg.Mode = "xdp"
	cfg.Interfaces = []string{p.IfA}
	cfg.NetNS = p.NSPathA()
	cfg.InitialDelay = 0
	cfg.CollectionInterval = time.Hour
	sink, shutdown := startInProcess(t, cfg)
	p.SendUDPFromB(t, 11, 300, 43000, 9300, true)
	p.SendUDP(t, 4, 300, 43001, 9301, false)
	shutdown()

	mds := sink.AllMetrics()
	require.NotEmpty(t, mds)
	last := mds[len(mds)-1:]
	in6 := "receive ipv6 udp 2001:db8::2 43000 2001:db8::1 9300 "
	// The datagrams A sent are egress, which XDP does not see.
	assert.Equal(t, map[string]int64{in6: 11}, withoutMLD(t, flowTotals(last, metadata.MetricPktstatbpfNetworkFlowPackets, p.IfA)))
	assert.Equal(t, map[string]int64{in6: 11 * int64(nettest.UDPFrameLen(300, true))}, withoutMLD(t, flowTotals(last, metadata.MetricPktstatbpfNetworkFlowBytes, p.IfA)))
	mode, _ := last[0].ResourceMetrics().At(0).Resource().Attributes().Get(metadata.ResourceAttrCaptureMode)
	assert.Equal(t, "xdp", mode.Str())
}

// TestReceiverAggregatesRealTraffic: eight UDP flows on a veth, reported
// with dimensions (no interface), ephemeral ports folded and two CIDR
// groups, become four series with the exact packets and bytes sent.
func TestReceiverAggregatesRealTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs")
	}
	for _, temporality := range []string{TemporalityCumulative, TemporalityDelta} {
		t.Run(temporality, func(t *testing.T) {
			p := nettest.NewPair(t)
			cfg := createDefaultConfig().(*Config)
			cfg.Interfaces = []string{p.IfA}
			cfg.NetNS = p.NSPathA()
			cfg.Temporality = temporality
			cfg.InitialDelay = 0
			cfg.CollectionInterval = 50 * time.Millisecond
			cfg.Dimensions = []aggregate.Dimension{aggregate.DimDirection, aggregate.DimIPVersion, aggregate.DimProto,
				aggregate.DimSrcIP, aggregate.DimDstIP, aggregate.DimSrcPort, aggregate.DimDstPort}
			cfg.FoldPorts = aggregate.FoldEphemeral
			cfg.CIDRGroups = []aggregate.CIDRGroup{{Name: "peer", CIDR: "192.0.2.2/32"}, {Name: "lab6", CIDR: "2001:db8::/64"}}
			sink, shutdown := startInProcess(t, cfg)

			// Five clients on ephemeral ports to one service: one series.
			for c := range 5 {
				p.SendUDP(t, 10, 100, uint16(40000+c), 9000, false)
			}
			p.SendUDP(t, 7, 100, 40010, 9001, false)
			p.SendUDP(t, 4, 100, 41000, 9000, true)
			p.SendUDPFromB(t, 6, 50, 42000, 9002, false)

			shutdown()
			mds := sink.AllMetrics()
			require.NotEmpty(t, mds)
			if temporality == TemporalityCumulative {
				mds = mds[len(mds)-1:]
			}
			// No interface dimension: the points carry none, hence "".
			// Grouped addresses are groups with their CIDR, not addresses.
			to9000 := "transmit ipv4 udp 192.0.2.1 peer(192.0.2.2/32) 9000 "
			to9001 := "transmit ipv4 udp 192.0.2.1 peer(192.0.2.2/32) 9001 "
			v6 := "transmit ipv6 udp lab6(2001:db8::/64) lab6(2001:db8::/64) 9000 "
			in := "receive ipv4 udp peer(192.0.2.2/32) 192.0.2.1 9002 "
			frame4, frame6, frameIn := int64(nettest.UDPFrameLen(100, false)), int64(nettest.UDPFrameLen(100, true)), int64(nettest.UDPFrameLen(50, false))
			assert.Equal(t, map[string]int64{to9000: 50, to9001: 7, v6: 4, in: 6},
				withoutMLD(t, flowTotals(mds, metadata.MetricPktstatbpfNetworkFlowPackets, "")))
			assert.Equal(t, map[string]int64{to9000: 50 * frame4, to9001: 7 * frame4, v6: 4 * frame6, in: 6 * frameIn},
				withoutMLD(t, flowTotals(mds, metadata.MetricPktstatbpfNetworkFlowBytes, "")))
		})
	}
}
