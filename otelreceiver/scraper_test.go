package pktstatbpfreceiver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/scrape from the current output")

// newTestScraper returns a started scraper over f with the clock at t0.
func newTestScraper(t testing.TB, f *fakeSource, edit func(*Config)) *flowScraper {
	t.Helper()
	cfg := createDefaultConfig().(*Config)
	if edit != nil {
		edit(cfg)
	}
	require.NoError(t, cfg.Validate())
	s, err := newFlowScraper(cfg, receivertest.NewNopSettings(metadata.Type), f.newSource)
	require.NoError(t, err)
	s.now = func() time.Time { return t0 }
	s.hostName = "testhost"
	require.NoError(t, s.start(context.Background(), componenttest.NewNopHost()))
	return s
}

func scrapeN(t *testing.T, s *flowScraper, n int) []pmetric.Metrics {
	t.Helper()
	out := make([]pmetric.Metrics, n)
	for i := range out {
		md, err := s.scrape(context.Background())
		require.NoError(t, err)
		out[i] = md
	}
	return out
}

func compareGolden(t *testing.T, name string, got pmetric.Metrics) {
	t.Helper()
	path := filepath.Join("testdata", "scrape", name+".yaml")
	if *update {
		require.NoError(t, golden.WriteMetrics(t, path, got, golden.SkipMetricTimestampNormalization()))
	}
	want, err := golden.ReadMetrics(path)
	require.NoError(t, err)
	require.NoError(t, pmetrictest.CompareMetrics(want, got,
		pmetrictest.IgnoreMetricDataPointsOrder(),
		pmetrictest.IgnoreMetricsOrder(),
	))
}

// mixedSnapshot has one flow of each attribute shape the receiver must map,
// and both kinds of overflow record.
func mixedSnapshot() core.Snapshot {
	tcp6 := core.FlowKey{
		Ifindex: 7, Direction: core.Egress, EtherType: core.EtherTypeIPv6, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("2001:db8::1"), DstAddr: netip.MustParseAddr("2001:db8::2"),
		SrcPort: 40000, DstPort: 443, PID: 4242, Comm: "curl", CgroupID: 99,
	}
	icmp4 := core.FlowKey{
		Ifindex: 7, Direction: core.Ingress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoICMP,
		SrcAddr: netip.MustParseAddr("192.0.2.2"), DstAddr: netip.MustParseAddr("192.0.2.1"),
		SrcPort: 8, DstPort: 0, VLAN: 42,
	}
	arp := core.FlowKey{Ifindex: 7, Direction: core.Ingress, EtherType: core.EtherTypeARP, DstPort: 1}
	ovIn := core.FlowKey{Ifindex: 7, Direction: core.Ingress}
	ovAll := core.FlowKey{Direction: core.Egress}
	overflow := func(k core.FlowKey, iface string, p, b uint64) core.Record {
		r := rec(k, at(-60), 0, 0, p, b)
		r.Interface = iface
		r.Overflow = true
		return r
	}
	dns := rec(udp4(core.Ingress, 5000, 53), at(-30), 0, 0, 10, 1000)
	dns.AppProto = "dns"
	tls := rec(tcp6, at(-5), 0, 0, 3, 258)
	tls.AppProto = "tls"
	tls.CgroupPath = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUIDUnderscores +
		".slice/cri-containerd-" + sixtyFourHex + ".scope"
	tls.Retransmits, tls.DeltaRetransmits = 2, 2
	tls.TCP = core.TCPFlagCounts{SYN: 1, FIN: 1}
	tls.DeltaTCP = tls.TCP
	return core.Snapshot{
		Time: at(10),
		Records: []core.Record{
			dns,
			tls,
			rec(icmp4, at(-1), 0, 0, 2, 196),
			rec(arp, at(2), 0, 0, 1, 60),
			overflow(ovIn, "veth0", 5, 400),
			overflow(ovAll, "", 1, 90),
		},
		Health: core.Health{
			ActiveFlows: 4, Capacity: 4096, KernelMemory: 45 << 20, OverflowPackets: 6, OverflowBytes: 490,
			ExpiredFlows: 2, DrainDuration: 1500 * time.Microsecond,
			Hooks: []core.HookState{
				{Target: "veth0", Hook: "tcx/ingress", Attached: true},
				{Target: "veth0", Hook: "tcx/egress", Attached: true, InFront: "program id 7 name cil_to_netdev type SchedCLS"},
				{Target: "veth1", Hook: "tcx/ingress", Error: "no such device"},
			},
		},
	}
}

func TestScrapeGolden(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
	}{
		{"cumulative_default", nil},
		{"all_dimensions", func(c *Config) {
			// kprobe mode fills every dimension, retransmits included.
			c.Mode = "kprobe"
			c.Dimensions = allDimensions
			c.Metrics.PktstatbpfNetworkFlowTCPRetransmits.Enabled = true
		}},
		{"aggregated", func(c *Config) {
			// Ports folded, addresses grouped, the smallest flow in other.
			c.Dimensions = []aggregate.Dimension{aggregate.DimDirection, aggregate.DimProto,
				aggregate.DimSrcIP, aggregate.DimDstIP, aggregate.DimSrcPort, aggregate.DimDstPort}
			c.FoldPorts = aggregate.FoldEphemeral
			c.CIDRGroups = []aggregate.CIDRGroup{{Name: "docs-v4", CIDR: "192.0.2.0/24"}}
			c.TopN = 2
		}},
		{"selected_and_disabled", func(c *Config) {
			// Only direction on bytes: every flow of one direction sums
			// into a series; overflow stays apart.
			c.Metrics.PktstatbpfNetworkFlowBytes.Attributes = []string{metadata.AttrNetworkIODirection}
			c.Metrics.PktstatbpfNetworkFlowPackets.Enabled = false
			c.Metrics.PktstatbpfDrainDuration.Enabled = false
			c.ResourceAttributes.HostName.Enabled = false
			c.Mode = "xdp"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSource{snaps: []core.Snapshot{mixedSnapshot()}}
			s := newTestScraper(t, f, tc.edit)
			compareGolden(t, tc.name, scrapeN(t, s, 1)[0])
		})
	}
}

// point is one flow data point, flattened for table assertions.
type point struct {
	start, ts time.Time
	value     int64
}

// flowPoints returns the points of metric keyed by source port (0 for
// series without one).
func flowPoints(t *testing.T, md pmetric.Metrics, metric string) map[int64]point {
	t.Helper()
	out := map[int64]point{}
	eachMetric(md, func(m pmetric.Metric) {
		if m.Name() != metric {
			return
		}
		dps := m.Sum().DataPoints()
		for l := 0; l < dps.Len(); l++ {
			dp := dps.At(l)
			port := int64(0)
			if v, ok := dp.Attributes().Get(metadata.AttrSourcePort); ok {
				port = v.Int()
			}
			_, dup := out[port]
			require.False(t, dup, "two %s points for source port %d", metric, port)
			out[port] = point{dp.StartTimestamp().AsTime(), dp.Timestamp().AsTime(), dp.IntValue()}
		}
	})
	return out
}

// TestCumulativeStartTimes: a series counts from its start time while it
// grows and for series_idle_timeout after; a flow that expires and comes
// back in that time continues it, one that comes back later starts a new
// series with a later start time, counting from zero.
func TestCumulativeStartTimes(t *testing.T) {
	a := udp4(core.Egress, 1111, 53)
	b := udp4(core.Egress, 2222, 53)
	expired := func(r core.Record) core.Record { r.Expired = true; return r }
	f := &fakeSource{snaps: []core.Snapshot{
		{Time: at(10), Records: []core.Record{rec(a, at(3), 0, 0, 3, 300)}},
		{Time: at(20), Records: []core.Record{rec(a, at(3), 3, 300, 2, 200), rec(b, at(15), 0, 0, 1, 100)}},
		// a idles out of the kernel table: its final report carries its last packet.
		{Time: at(30), Records: []core.Record{expired(rec(a, at(3), 5, 500, 1, 100)), rec(b, at(15), 1, 100, 0, 0)}},
		// b has not grown for 20 s > 15 s: no longer reported.
		{Time: at(40), Records: []core.Record{rec(b, at(15), 1, 100, 0, 0)}},
		// a comes back within 15 s of its last growth: the same series.
		{Time: at(50), Records: []core.Record{rec(a, at(45), 0, 0, 4, 400)}},
		{Time: at(70), Records: []core.Record{rec(a, at(45), 4, 400, 0, 0)}},
		// a returns after its series ended: a new one, from the previous drain.
		{Time: at(80), Records: []core.Record{rec(a, at(62), 4, 400, 2, 200)}},
	}}
	s := newTestScraper(t, f, func(c *Config) { c.SeriesIdleTimeout = aggregate.Duration(15 * time.Second) })
	got := scrapeN(t, s, 7)
	want := []map[int64]point{
		{1111: {at(3), at(10), 3}},
		{1111: {at(3), at(20), 5}, 2222: {at(15), at(20), 1}},
		{1111: {at(3), at(30), 6}, 2222: {at(15), at(30), 1}},
		{1111: {at(3), at(40), 6}},
		{1111: {at(3), at(50), 10}},
		{},
		{1111: {at(70), at(80), 2}},
	}
	for i := range want {
		assert.Equal(t, want[i], flowPoints(t, got[i], metadata.MetricPktstatbpfNetworkFlowPackets), "scrape %d packets", i+1)
		bytes := flowPoints(t, got[i], metadata.MetricPktstatbpfNetworkFlowBytes)
		for port, p := range want[i] {
			assert.Equal(t, point{p.start, p.ts, p.value * 100}, bytes[port], "scrape %d bytes of port %d", i+1, port)
		}
		sum := got[i].ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0)
		if sum.Name() == metadata.MetricPktstatbpfNetworkFlowBytes {
			assert.Equal(t, pmetric.AggregationTemporalityCumulative, sum.Sum().AggregationTemporality())
			assert.True(t, sum.Sum().IsMonotonic())
		}
	}
}

// TestMergedSeriesStartIsFixed: flows merged into one series by a narrow
// attribute selection give it the earliest start of its first scrape; a
// member that joins later never moves it.
func TestMergedSeriesStartIsFixed(t *testing.T) {
	a := udp4(core.Egress, 1111, 53)
	b := udp4(core.Egress, 2222, 53)
	c := udp4(core.Egress, 3333, 53)
	f := &fakeSource{snaps: []core.Snapshot{
		{Time: at(10), Records: []core.Record{rec(a, at(5), 0, 0, 1, 100), rec(b, at(2), 0, 0, 2, 200)}},
		// c claims an earlier start (clock skew between CPUs, say).
		{Time: at(20), Records: []core.Record{rec(a, at(5), 1, 100, 0, 0), rec(b, at(2), 2, 200, 0, 0), rec(c, at(1), 0, 0, 4, 400)}},
	}}
	s := newTestScraper(t, f, func(c *Config) {
		c.Metrics.PktstatbpfNetworkFlowPackets.Attributes = []string{metadata.AttrNetworkIODirection}
	})
	got := scrapeN(t, s, 2)
	assert.Equal(t, map[int64]point{0: {at(2), at(10), 3}}, flowPoints(t, got[0], metadata.MetricPktstatbpfNetworkFlowPackets))
	assert.Equal(t, map[int64]point{0: {at(2), at(20), 7}}, flowPoints(t, got[1], metadata.MetricPktstatbpfNetworkFlowPackets))
}

func TestDeltaWindows(t *testing.T) {
	a := udp4(core.Ingress, 1111, 53)
	b := udp4(core.Ingress, 2222, 53)
	expired := func(r core.Record) core.Record { r.Expired = true; return r }
	f := &fakeSource{snaps: []core.Snapshot{
		{Time: at(10), Records: []core.Record{rec(a, at(3), 0, 0, 3, 300)}},
		// b is new, a is idle: a zero delta is not a point.
		{Time: at(20), Records: []core.Record{rec(a, at(3), 3, 300, 0, 0), rec(b, at(15), 0, 0, 2, 200)}},
		{Time: at(30), Records: []core.Record{expired(rec(a, at(3), 3, 300, 1, 100)), rec(b, at(15), 2, 200, 5, 500)}},
	}}
	s := newTestScraper(t, f, func(c *Config) { c.Temporality = TemporalityDelta })
	got := scrapeN(t, s, 3)
	// Windows are contiguous: each starts where the previous scrape ended,
	// the first where the receiver started.
	want := []map[int64]point{
		{1111: {t0, at(10), 3}},
		{2222: {at(10), at(20), 2}},
		{1111: {at(20), at(30), 1}, 2222: {at(20), at(30), 5}},
	}
	for i := range want {
		assert.Equal(t, want[i], flowPoints(t, got[i], metadata.MetricPktstatbpfNetworkFlowPackets), "scrape %d", i+1)
		ms := got[i].ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		for k := 0; k < ms.Len(); k++ {
			if m := ms.At(k); m.Name() == metadata.MetricPktstatbpfNetworkFlowPackets {
				assert.Equal(t, pmetric.AggregationTemporalityDelta, m.Sum().AggregationTemporality())
			}
		}
	}
}

// allDimensions lists every dimension aggregate knows.
var allDimensions = []aggregate.Dimension{
	aggregate.DimInterface, aggregate.DimDirection, aggregate.DimIPVersion, aggregate.DimProto,
	aggregate.DimSrcIP, aggregate.DimDstIP, aggregate.DimSrcPort, aggregate.DimDstPort,
	aggregate.DimVLAN, aggregate.DimFlags, aggregate.DimPID, aggregate.DimComm, aggregate.DimCgroup,
	aggregate.DimContainerID, aggregate.DimPodUID, aggregate.DimAppProto,
}

// TestSelectionConservesTotals checks that flows merged by a narrow
// attribute selection, including overflow, sum to the traffic in the snapshot.
func TestSelectionConservesTotals(t *testing.T) {
	snap := mixedSnapshot()
	var wantPkts, wantBytes int64
	for _, r := range snap.Records {
		wantPkts += int64(r.DeltaPackets)
		wantBytes += int64(r.DeltaBytes)
	}
	f := &fakeSource{snaps: []core.Snapshot{snap}}
	s := newTestScraper(t, f, func(c *Config) {
		c.Metrics.PktstatbpfNetworkFlowPackets.Attributes = []string{metadata.AttrNetworkType}
		c.Metrics.PktstatbpfNetworkFlowBytes.Attributes = []string{metadata.AttrNetworkTransport}
	})
	md := scrapeN(t, s, 1)[0]
	totals := map[string]int64{}
	series := map[string]int{}
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	for k := 0; k < ms.Len(); k++ {
		m := ms.At(k)
		switch m.Name() {
		case metadata.MetricPktstatbpfNetworkFlowPackets, metadata.MetricPktstatbpfNetworkFlowBytes, metadata.MetricPktstatbpfOverflowPackets:
		default:
			continue
		}
		for l := 0; l < m.Sum().DataPoints().Len(); l++ {
			totals[m.Name()] += m.Sum().DataPoints().At(l).IntValue()
			series[m.Name()]++
		}
	}
	assert.Equal(t, wantPkts, totals[metadata.MetricPktstatbpfNetworkFlowPackets])
	assert.Equal(t, wantBytes, totals[metadata.MetricPktstatbpfNetworkFlowBytes])
	// ipv4, ipv6, ARP (no network.type), and the two overflow series
	// (receive on veth0, transmit last-resort), which keep their own identity.
	assert.Equal(t, 4, series[metadata.MetricPktstatbpfNetworkFlowPackets])
	assert.Equal(t, int64(6), totals[metadata.MetricPktstatbpfOverflowPackets])
}

func TestScrapeReadError(t *testing.T) {
	f := &fakeSource{readErr: errors.New("map lookup: bad fd")}
	s := newTestScraper(t, f, nil)
	md, err := s.scrape(context.Background())
	require.EqualError(t, err, "read flows: map lookup: bad fd")
	assert.Equal(t, 0, md.DataPointCount())
}

const sixtyFourHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// podUIDUnderscores is a pod UID as the systemd cgroup driver writes it.
const podUIDUnderscores = "1a2b3c4d_0000_4000_8000_00000000beef"

// flagPoints returns the points of pktstatbpf.network.flow.tcp.flags keyed
// by source port and flag.
func flagPoints(md pmetric.Metrics) map[string]point {
	out := map[string]point{}
	eachMetric(md, func(m pmetric.Metric) {
		if m.Name() == metadata.MetricPktstatbpfNetworkFlowTCPFlags {
			for l := 0; l < m.Sum().DataPoints().Len(); l++ {
				dp := m.Sum().DataPoints().At(l)
				port, _ := dp.Attributes().Get(metadata.AttrSourcePort)
				flag, _ := dp.Attributes().Get(metadata.AttrTCPFlag)
				out[fmt.Sprintf("%d/%s", port.Int(), flag.Str())] = point{dp.StartTimestamp().AsTime(), dp.Timestamp().AsTime(), dp.IntValue()}
			}
		}
	})
	return out
}

// TestTCPFlagPoints: pktstatbpf.network.flow.tcp.flags has one point per
// series and flag once the flag was counted, cumulative from the series'
// start or as contiguous delta windows; kprobe mode, which counts no
// flags, has none.
func TestTCPFlagPoints(t *testing.T) {
	tcp := func(sport uint16) core.FlowKey {
		k := udp4(core.Egress, sport, 443)
		k.Proto = core.ProtoTCP
		return k
	}
	flags := func(r core.Record, prev, d core.TCPFlagCounts) core.Record {
		r.TCP, r.DeltaTCP = prev.Add(d), d
		return r
	}
	a, b := tcp(1111), tcp(2222)
	snaps := func() []core.Snapshot {
		return []core.Snapshot{
			{Time: at(10), Records: []core.Record{
				flags(rec(a, at(3), 0, 0, 3, 300), core.TCPFlagCounts{}, core.TCPFlagCounts{SYN: 1}),
				flags(rec(b, at(4), 0, 0, 2, 200), core.TCPFlagCounts{}, core.TCPFlagCounts{SYN: 1, RST: 1}),
			}},
			{Time: at(20), Records: []core.Record{
				flags(rec(a, at(3), 3, 300, 2, 200), core.TCPFlagCounts{SYN: 1}, core.TCPFlagCounts{FIN: 1}),
			}},
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []map[string]point
	}{
		{"cumulative", nil, []map[string]point{
			{"1111/syn": {at(3), at(10), 1}, "2222/syn": {at(4), at(10), 1}, "2222/rst": {at(4), at(10), 1}},
			{"1111/syn": {at(3), at(20), 1}, "1111/fin": {at(3), at(20), 1}, "2222/syn": {at(4), at(20), 1}, "2222/rst": {at(4), at(20), 1}},
		}},
		{"delta", func(c *Config) { c.Temporality = TemporalityDelta }, []map[string]point{
			{"1111/syn": {t0, at(10), 1}, "2222/syn": {t0, at(10), 1}, "2222/rst": {t0, at(10), 1}},
			{"1111/fin": {at(10), at(20), 1}},
		}},
		{"kprobe", func(c *Config) { c.Mode = "kprobe" }, []map[string]point{{}, {}}},
		{"disabled", func(c *Config) { c.Metrics.PktstatbpfNetworkFlowTCPFlags.Enabled = false }, []map[string]point{{}, {}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestScraper(t, &fakeSource{snaps: snaps()}, tc.edit)
			got := scrapeN(t, s, 2)
			for i := range tc.want {
				assert.Equal(t, tc.want[i], flagPoints(got[i]), "scrape %d", i+1)
			}
		})
	}
}

// TestSharedSetMatchesOwnSets: bytes and packets with equal selections
// share one series set; each metric's points are exactly those it gets
// from a set of its own (the other metric disabled), through series that
// merge, end, return and start again, cumulative and delta.
func TestSharedSetMatchesOwnSets(t *testing.T) {
	a := udp4(core.Egress, 1111, 53)
	b := udp4(core.Egress, 2222, 53)
	c := udp4(core.Ingress, 3333, 53)
	snaps := []core.Snapshot{
		{Time: at(10), Records: []core.Record{rec(a, at(5), 0, 0, 1, 100), rec(b, at(2), 0, 0, 2, 250)}},
		{Time: at(20), Records: []core.Record{rec(a, at(5), 1, 100, 3, 330), rec(b, at(2), 2, 250, 0, 0), rec(c, at(1), 0, 0, 4, 480)}},
		{Time: at(40), Records: []core.Record{rec(c, at(1), 4, 480, 1, 90)}},
		{Time: at(50), Records: []core.Record{rec(a, at(45), 0, 0, 5, 600), rec(c, at(1), 5, 570, 0, 0)}},
	}
	metricOf := func(md pmetric.Metrics, name string) pmetric.Metric {
		ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		for i := 0; i < ms.Len(); i++ {
			if ms.At(i).Name() == name {
				return ms.At(i)
			}
		}
		t.Fatalf("no metric %s", name)
		return pmetric.Metric{}
	}
	// points lists a sum's points in order, with everything they carry.
	points := func(m pmetric.Metric) []string {
		var out []string
		dps := m.Sum().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			out = append(out, fmt.Sprint(dp.StartTimestamp(), dp.Timestamp(), dp.IntValue(), dp.Attributes().AsRaw()))
		}
		return out
	}
	for _, temporality := range []string{TemporalityCumulative, TemporalityDelta} {
		for _, attrs := range [][]string{nil, {metadata.AttrNetworkIODirection}} {
			t.Run(fmt.Sprint(temporality, attrs), func(t *testing.T) {
				scraper := func(bytes, packets bool) []pmetric.Metrics {
					s := newTestScraper(t, &fakeSource{snaps: snaps}, func(c *Config) {
						c.Temporality = temporality
						c.SeriesIdleTimeout = aggregate.Duration(15 * time.Second)
						c.Metrics.PktstatbpfNetworkFlowBytes.Enabled = bytes
						c.Metrics.PktstatbpfNetworkFlowPackets.Enabled = packets
						c.Metrics.PktstatbpfNetworkFlowBytes.Attributes = attrs
						c.Metrics.PktstatbpfNetworkFlowPackets.Attributes = attrs
					})
					return scrapeN(t, s, len(snaps))
				}
				shared, bytesOnly, packetsOnly := scraper(true, true), scraper(true, false), scraper(false, true)
				for i := range snaps {
					for _, own := range []struct {
						md   pmetric.Metrics
						name string
					}{{bytesOnly[i], metadata.MetricPktstatbpfNetworkFlowBytes}, {packetsOnly[i], metadata.MetricPktstatbpfNetworkFlowPackets}} {
						want, got := points(metricOf(own.md, own.name)), points(metricOf(shared[i], own.name))
						require.NotEmpty(t, want, "scrape %d %s", i+1, own.name)
						assert.Equal(t, want, got, "scrape %d %s", i+1, own.name)
					}
				}
			})
		}
	}
}
