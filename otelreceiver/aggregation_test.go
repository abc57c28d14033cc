package pktstatbpfreceiver

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

func TestAttributeMapping(t *testing.T) {
	addr := netip.MustParseAddr
	cases := []struct {
		name string
		dims []aggregate.Dimension
		s    aggregate.Series
		want metadata.FlowAttributes
	}{
		{
			name: "folded source port is left out, a group replaces the address",
			dims: aggregate.DefaultDimensions,
			s: aggregate.Series{Key: aggregate.Key{
				Interface: "eth0", Direction: core.Ingress, IPVersion: 4, Transport: "tcp",
				DstAddr:  addr("192.0.2.1"),
				HasPorts: true, SrcPortFolded: true, DstPort: 443,
			}.WithLabels(aggregate.Labels{SrcGroup: "office"})},
			want: metadata.FlowAttributes{
				InterfaceName: "eth0", Direction: "receive", NetworkType: "ipv4", Transport: "tcp",
				SourceGroup: "office", SourceCIDR: "10.1.0.0/16", DestinationAddress: "192.0.2.1",
				HasDestinationPort: true, DestinationPort: 443,
			},
		},
		{
			name: "an address outside every group is other, with no range",
			dims: aggregate.DefaultDimensions,
			s: aggregate.Series{Key: aggregate.Key{
				IPVersion: 6, Transport: "udp",
			}.WithLabels(aggregate.Labels{SrcGroup: aggregate.Other, DstGroup: "lab"})},
			want: metadata.FlowAttributes{
				Direction: "receive", NetworkType: "ipv6", Transport: "udp",
				SourceGroup: "other", DestinationGroup: "lab", DestinationCIDR: "2001:db8:1::/48",
			},
		},
		{
			name: "arp is a network type, not a transport",
			dims: aggregate.DefaultDimensions,
			s: aggregate.Series{Key: aggregate.Key{
				Interface: "eth0", Direction: core.Egress, Transport: "arp",
				SrcAddr: addr("192.0.2.1"), DstAddr: addr("192.0.2.2"), DstPort: 1,
			}},
			want: metadata.FlowAttributes{
				InterfaceName: "eth0", Direction: "transmit", NetworkType: "arp",
				SourceAddress: "192.0.2.1", DestinationAddress: "192.0.2.2",
			},
		},
		{
			name: "other ethertypes too, even without ip_version",
			dims: []aggregate.Dimension{aggregate.DimProto},
			s:    aggregate.Series{Key: aggregate.Key{Transport: "ethertype-0x88cc"}},
			want: metadata.FlowAttributes{NetworkType: "ethertype-0x88cc"},
		},
		{
			name: "an ip flow without ip_version keeps its transport and no network type",
			dims: []aggregate.Dimension{aggregate.DimProto},
			s:    aggregate.Series{Key: aggregate.Key{Transport: "tcp"}},
			want: metadata.FlowAttributes{Transport: "tcp"},
		},
		{
			name: "dropped dimensions are absent, port 0 and direction ingress included",
			dims: []aggregate.Dimension{aggregate.DimProto, aggregate.DimDstPort},
			s:    aggregate.Series{Key: aggregate.Key{Transport: "udp", HasPorts: true, DstPort: 0}},
			want: metadata.FlowAttributes{Transport: "udp", HasDestinationPort: true, DestinationPort: 0},
		},
		{
			name: "icmp type and code travel in the port fields",
			dims: aggregate.DefaultDimensions,
			s: aggregate.Series{Key: aggregate.Key{
				Direction: core.Egress, IPVersion: 6, Transport: "ipv6-icmp",
				SrcAddr: addr("::"), DstAddr: addr("ff02::16"), SrcPort: 143, DstPort: 0,
			}},
			want: metadata.FlowAttributes{
				Direction: "transmit", NetworkType: "ipv6", Transport: "ipv6-icmp",
				SourceAddress: "::", DestinationAddress: "ff02::16",
				HasICMPType: true, ICMPType: 143, HasICMPCode: true, ICMPCode: 0,
			},
		},
		{
			name: "enrichments",
			dims: []aggregate.Dimension{aggregate.DimVLAN, aggregate.DimFlags, aggregate.DimPID, aggregate.DimComm,
				aggregate.DimCgroup, aggregate.DimContainerID, aggregate.DimPodUID, aggregate.DimAppProto},
			s: aggregate.Series{Key: aggregate.Key{
				VLAN: 42, Flags: core.FlagFragment | core.FlagTruncated, PID: 7,
			}.WithLabels(aggregate.Labels{
				Comm: "nginx", Cgroup: "/system.slice/nginx.service", ContainerID: "abc", PodUID: "uid", AppProto: "http2",
			})},
			want: metadata.FlowAttributes{
				VLANID: 42, Flags: "fragment,truncated", PID: 7, Comm: "nginx",
				CgroupPath: "/system.slice/nginx.service", ContainerID: "abc", PodUID: "uid", ProtocolName: "http2",
			},
		},
		{
			name: "other has only its marker",
			dims: aggregate.DefaultDimensions,
			s:    aggregate.Series{Kind: aggregate.KindOther},
			want: metadata.FlowAttributes{Other: true},
		},
		{
			name: "overflow keeps where and which way",
			dims: aggregate.DefaultDimensions,
			s:    aggregate.Series{Kind: aggregate.KindOverflow, Key: aggregate.Key{Interface: "eth0", Direction: core.Ingress}},
			want: metadata.FlowAttributes{InterfaceName: "eth0", Direction: "receive", Overflow: true},
		},
		{
			name: "overflow without the direction dimension",
			dims: []aggregate.Dimension{aggregate.DimInterface},
			s:    aggregate.Series{Kind: aggregate.KindOverflow, Key: aggregate.Key{Interface: "eth0"}},
			want: metadata.FlowAttributes{InterfaceName: "eth0", Overflow: true},
		},
		{
			name: "filtered keeps where and which way",
			dims: aggregate.DefaultDimensions,
			s:    aggregate.Series{Kind: aggregate.KindFiltered, Key: aggregate.Key{Interface: "eth0", Direction: core.Egress}},
			want: metadata.FlowAttributes{InterfaceName: "eth0", Direction: "transmit", Filtered: true},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			groups := []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.0.0/16"}, {Name: "lab", CIDR: "2001:db8:1::/48"}}
			assert.Equal(t, tc.want, newAttributeMapper(tc.dims, groups).attributes(&tc.s))
		})
	}
}

// flowSeries returns metric's points in md, keyed by their attributes.
func flowSeries(md pmetric.Metrics, metric string) map[string]pmetric.NumberDataPoint {
	out := map[string]pmetric.NumberDataPoint{}
	eachMetric(md, func(m pmetric.Metric) {
		if m.Name() == metric {
			for l := 0; l < m.Sum().DataPoints().Len(); l++ {
				dp := m.Sum().DataPoints().At(l)
				out[attrString(dp.Attributes())] = dp
			}
		}
	})
	return out
}

// attrString writes attributes in key order.
func attrString(m pcommon.Map) string {
	return fmt.Sprint(m.AsRaw())
}

// TestAppProtoIsProtocolName: network.protocol.name is what the kernel
// detected in the payload, whatever the port says.
func TestAppProtoIsProtocolName(t *testing.T) {
	tcp := func(dport uint16, app string) core.Record {
		k := udp4(core.Egress, 40000+dport, dport)
		k.Proto = core.ProtoTCP
		r := rec(k, at(1), 0, 0, 1, 100)
		r.AppProto = app
		return r
	}
	f := &fakeSource{snaps: []core.Snapshot{{Time: at(10), Records: []core.Record{
		tcp(443, "http"), // plain HTTP on the HTTPS port
		tcp(22, ""),      // nothing recognised: no guess from the port
		tcp(8443, "tls"),
	}}}}
	s := newTestScraper(t, f, func(c *Config) {
		c.Dimensions = []aggregate.Dimension{aggregate.DimDstPort, aggregate.DimAppProto}
	})
	got := flowSeries(scrapeN(t, s, 1)[0], metadata.MetricPktstatbpfNetworkFlowPackets)
	assert.ElementsMatch(t, []string{
		"map[destination.port:443 network.protocol.name:http]",
		"map[destination.port:22]",
		"map[destination.port:8443 network.protocol.name:tls]",
	}, keys(got))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// clientFlows is a server host's traffic at one drain: clients in the
// office network on ephemeral ports to its ports 443 and 80, a DNS query
// out, and a few clients elsewhere; the counts grow with the drain index i.
func clientFlows(i int) []core.Record {
	var out []core.Record
	add := func(dir core.Direction, proto uint8, src string, sport uint16, dst string, dport uint16, pkts uint64) {
		k := core.FlowKey{
			Ifindex: 7, Direction: dir, EtherType: core.EtherTypeIPv4, Proto: proto,
			SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport,
		}
		out = append(out, rec(k, at(1), 0, 0, pkts, pkts*100))
	}
	for c := range 20 {
		add(core.Ingress, core.ProtoTCP, fmt.Sprintf("10.1.%d.%d", c/10, c%10+1), uint16(40000+c), "192.0.2.10", 443, uint64(i+c+1))
		add(core.Egress, core.ProtoTCP, "192.0.2.10", 443, fmt.Sprintf("10.1.%d.%d", c/10, c%10+1), uint16(40000+c), uint64(2*(i+c+1)))
	}
	for c := range 5 {
		add(core.Ingress, core.ProtoTCP, "10.1.9.9", uint16(50000+c), "192.0.2.10", 80, uint64(i+1))
		add(core.Ingress, core.ProtoTCP, fmt.Sprintf("198.51.100.%d", c+1), uint16(33000+c), "192.0.2.10", 443, 1)
	}
	add(core.Egress, core.ProtoUDP, "192.0.2.10", 45000, "192.0.2.53", 53, 1)
	return out
}

// TestAggregationConservesTotals runs a server's client traffic through
// dimensions, ephemeral port folding, a CIDR group and top_n into pdata:
// 51 flows per drain become 3 series (2 kept, other), and the points add
// up exactly to the records' counts, cumulative and delta.
func TestAggregationConservesTotals(t *testing.T) {
	edit := func(temporality string) func(*Config) {
		return func(c *Config) {
			c.Temporality = temporality
			c.Dimensions = []aggregate.Dimension{aggregate.DimDirection, aggregate.DimProto,
				aggregate.DimSrcIP, aggregate.DimDstIP, aggregate.DimSrcPort, aggregate.DimDstPort}
			c.FoldPorts = aggregate.FoldEphemeral
			c.CIDRGroups = []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.0.0/16"}}
			c.TopN = 2
		}
	}
	const drains = 3
	var snaps []core.Snapshot
	var wantPkts, wantBytes [drains]int64
	for i := range drains {
		recs := clientFlows(i)
		require.Len(t, recs, 51)
		for _, r := range recs {
			wantPkts[i] += int64(r.DeltaPackets)
			wantBytes[i] += int64(r.DeltaBytes)
		}
		snaps = append(snaps, core.Snapshot{Time: at(10 * (i + 1)), Records: recs})
	}
	for _, temporality := range []string{TemporalityCumulative, TemporalityDelta} {
		t.Run(temporality, func(t *testing.T) {
			s := newTestScraper(t, &fakeSource{snaps: snaps}, edit(temporality))
			got := scrapeN(t, s, drains)
			var runPkts, runBytes int64
			for i, md := range got {
				runPkts += wantPkts[i]
				runBytes += wantBytes[i]
				pkts := flowSeries(md, metadata.MetricPktstatbpfNetworkFlowPackets)
				bytes := flowSeries(md, metadata.MetricPktstatbpfNetworkFlowBytes)
				// The office's clients to 443 both ways are the two top
				// keys every time; port 80 and the others are in other.
				assert.ElementsMatch(t, []string{
					"map[network.io.direction:transmit network.transport:tcp pktstatbpf.destination.cidr:10.1.0.0/16 pktstatbpf.destination.group:office source.address:192.0.2.10 source.port:443]",
					"map[destination.address:192.0.2.10 destination.port:443 network.io.direction:receive network.transport:tcp pktstatbpf.source.cidr:10.1.0.0/16 pktstatbpf.source.group:office]",
					"map[pktstatbpf.other:true]",
				}, keys(pkts), "drain %d", i+1)
				var sumP, sumB int64
				for k, dp := range pkts {
					sumP += dp.IntValue()
					sumB += bytes[k].IntValue()
				}
				if temporality == TemporalityDelta {
					assert.Equal(t, wantPkts[i], sumP, "packets of drain %d", i+1)
					assert.Equal(t, wantBytes[i], sumB, "bytes of drain %d", i+1)
				} else {
					assert.Equal(t, runPkts, sumP, "packets up to drain %d", i+1)
					assert.Equal(t, runBytes, sumB, "bytes up to drain %d", i+1)
				}
			}
			// Exact values of the last drain: transmit to the office is
			// 2 * sum(i+c+1) packets over the 20 clients.
			last := flowSeries(got[drains-1], metadata.MetricPktstatbpfNetworkFlowPackets)
			tx := last["map[network.io.direction:transmit network.transport:tcp pktstatbpf.destination.cidr:10.1.0.0/16 pktstatbpf.destination.group:office source.address:192.0.2.10 source.port:443]"]
			other := last["map[pktstatbpf.other:true]"]
			if temporality == TemporalityDelta {
				assert.Equal(t, int64(2*(20*2+190+20)), tx.IntValue()) // i=2: 2*sum(c+3)
				assert.Equal(t, int64(5*3+5+1), other.IntValue())
				assert.Equal(t, pcommon.NewTimestampFromTime(at(20)), tx.StartTimestamp())
			} else {
				assert.Equal(t, int64(2*(3*190+20*(1+2+3))), tx.IntValue())
				assert.Equal(t, int64(5*(1+2+3)+3*(5+1)), other.IntValue())
				assert.Equal(t, pcommon.NewTimestampFromTime(at(1)), tx.StartTimestamp())
			}
		})
	}
}

// TestRetransmitsMetric: pktstatbpf.network.flow.tcp.retransmits has a point only for
// series that retransmitted, cumulative from the series' start or per
// window, including retransmissions reported without new packets.
func TestRetransmitsMetric(t *testing.T) {
	k := udp4(core.Egress, 40000, 443)
	k.Proto = core.ProtoTCP
	tcp := func(prevP, dp, total, delta uint64) core.Record {
		r := rec(k, at(1), prevP, prevP*100, dp, dp*100)
		r.Retransmits, r.DeltaRetransmits = total, delta
		return r
	}
	dns := rec(udp4(core.Egress, 40001, 53), at(1), 0, 0, 1, 80)
	snaps := []core.Snapshot{
		{Time: at(10), Records: []core.Record{tcp(0, 5, 0, 0), dns}},
		{Time: at(20), Records: []core.Record{tcp(5, 4, 2, 2)}},
		// A retransmit-only record: the sends are in, the segments went again.
		{Time: at(30), Records: []core.Record{tcp(9, 0, 5, 3)}},
	}
	label := "map[destination.address:192.0.2.2 destination.port:443 network.interface.name:veth0 network.io.direction:transmit " +
		"network.transport:tcp network.type:ipv4 source.address:192.0.2.1 source.port:40000]"
	for _, tc := range []struct {
		temporality string
		want        []map[string]int64
	}{
		{TemporalityCumulative, []map[string]int64{{}, {label: 2}, {label: 5}}},
		{TemporalityDelta, []map[string]int64{{}, {label: 2}, {label: 3}}},
	} {
		t.Run(tc.temporality, func(t *testing.T) {
			s := newTestScraper(t, &fakeSource{snaps: snaps}, func(c *Config) {
				c.Temporality = tc.temporality
				c.Metrics.PktstatbpfNetworkFlowTCPRetransmits.Enabled = true
			})
			for i, md := range scrapeN(t, s, len(snaps)) {
				got := map[string]int64{}
				for k, dp := range flowSeries(md, metadata.MetricPktstatbpfNetworkFlowTCPRetransmits) {
					got[k] = dp.IntValue()
					if tc.temporality == TemporalityCumulative {
						assert.Equal(t, pcommon.NewTimestampFromTime(at(1)), dp.StartTimestamp())
					}
				}
				assert.Equal(t, tc.want[i], got, "scrape %d", i+1)
			}
		})
	}
	// Off by default: no metric at all.
	s := newTestScraper(t, &fakeSource{snaps: snaps}, nil)
	for _, md := range scrapeN(t, s, len(snaps)) {
		assert.Empty(t, flowSeries(md, metadata.MetricPktstatbpfNetworkFlowTCPRetransmits))
	}
}

// TestAttributesDropFurther: a metric whose attributes list drops kept
// dimensions sums the aggregator's series again, from their deltas, so
// totals hold and the sum never goes backwards when one of them ends.
func TestAttributesDropFurther(t *testing.T) {
	a := udp4(core.Egress, 1111, 53)
	b := udp4(core.Egress, 2222, 53)
	f := &fakeSource{snaps: []core.Snapshot{
		{Time: at(10), Records: []core.Record{rec(a, at(3), 0, 0, 3, 300), rec(b, at(5), 0, 0, 1, 100)}},
		// b's series ends (idle for longer than 15 s at 30 s).
		{Time: at(20), Records: []core.Record{rec(a, at(3), 3, 300, 2, 200)}},
		{Time: at(30), Records: []core.Record{rec(a, at(3), 5, 500, 1, 100)}},
	}}
	s := newTestScraper(t, f, func(c *Config) {
		c.SeriesIdleTimeout = aggregate.Duration(15 * time.Second)
		c.Metrics.PktstatbpfNetworkFlowPackets.Attributes = []string{metadata.AttrDestinationPort}
	})
	label := "map[destination.port:53]"
	for i, want := range []int64{4, 6, 7} {
		got := flowSeries(scrapeN(t, s, 1)[0], metadata.MetricPktstatbpfNetworkFlowPackets)
		require.Contains(t, got, label)
		assert.Equal(t, want, got[label].IntValue(), "scrape %d", i+1)
		assert.Equal(t, pcommon.NewTimestampFromTime(at(3)), got[label].StartTimestamp())
	}
}
