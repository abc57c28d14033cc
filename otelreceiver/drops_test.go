package pktstatbpfreceiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// dropPoints sums the points of a drop metric by flow label and reason.
func dropPoints(mds []pmetric.Metrics, metric string) map[string]int64 {
	out := map[string]int64{}
	eachPoint(mds, metric, func(dp pmetric.NumberDataPoint) {
		reason, _ := dp.Attributes().Get(metadata.AttrDropReason)
		label := flowLabel(dp.Attributes())
		if v, ok := dp.Attributes().Get(metadata.AttrOverflow); ok && v.Bool() {
			label = "overflow "
		}
		out[label+reason.Str()] += dp.IntValue()
	})
	return out
}

// Drop records become the drop metrics, with the flow attributes plus the
// reason; reasons stay apart; with drops off the metrics are absent.
func TestScrapeDrops(t *testing.T) {
	k := udp4(core.Ingress, 40000, 53)
	unknown := k
	unknown.Direction = core.DirectionUnknown
	drop := func(k core.FlowKey, reason string, n uint64) core.Record {
		r := rec(k, at(0), 0, 0, n, n*86)
		r.DropReason = reason
		return r
	}
	over := drop(core.FlowKey{Direction: core.Ingress}, "no_socket", 3)
	over.Overflow = true
	snap := core.Snapshot{Time: at(1), Records: []core.Record{rec(k, at(0), 0, 0, 10, 1000)},
		Drops: []core.Record{drop(k, "no_socket", 4), drop(k, "netfilter_drop", 2), drop(unknown, "netfilter_drop", 1), over}}
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("drops=%t", on), func(t *testing.T) {
			f := &fakeSource{snaps: []core.Snapshot{snap}}
			s := newTestScraper(t, f, func(c *Config) { c.Drops = on })
			require.Equal(t, on, f.gotConfig.Drops)
			md := scrapeN(t, s, 1)
			flow := "ipv4 udp 192.0.2.1 40000 192.0.2.2 53 "
			want := map[string]int64{}
			wantBytes := map[string]int64{}
			if on {
				want = map[string]int64{"receive " + flow + "no_socket": 4, "receive " + flow + "netfilter_drop": 2,
					"unknown " + flow + "netfilter_drop": 1, "overflow no_socket": 3}
				for k, v := range want {
					wantBytes[k] = v * 86
				}
			}
			require.Equal(t, want, dropPoints(md, metadata.MetricPktstatbpfNetworkFlowDropPackets))
			require.Equal(t, wantBytes, dropPoints(md, metadata.MetricPktstatbpfNetworkFlowDropBytes))
			require.Equal(t, map[string]int64{"receive " + flow: 10}, flowTotals(md, metadata.MetricPktstatbpfNetworkFlowPackets, "veth0"))
		})
	}
}

// The receiver on the real kernel: N datagrams to a port with no socket in
// B are N no_socket drops of their L3 length on that flow.
func TestReceiverDropsOnKernel(t *testing.T) {
	p := nettest.NewPair(t)
	cfg := createDefaultConfig().(*Config)
	cfg.Interfaces = []string{p.IfB}
	cfg.NetNS = p.NSPathB()
	cfg.Drops = true
	cfg.InitialDelay = 0
	cfg.CollectionInterval = 50 * time.Millisecond
	sink := new(consumertest.MetricsSink)
	rcv, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	if err := rcv.Start(context.Background(), componenttest.NewNopHost()); err != nil {
		if errors.Is(err, core.ErrNotSupported) && os.Getenv("PKTSTAT_REQUIRE_BPF") != "1" {
			t.Skipf("kernel feature missing: %v", err)
		}
		t.Fatal(err)
	}
	const n, size, sport, dport = 48, 250, 41301, 7301
	p.SendUDPNoWait(t, n, size, sport, dport)
	label := fmt.Sprintf("receive ipv4 udp %s %d %s %d no_socket", p.A4, sport, p.B4, dport)
	// Cumulative: the newest batch with the series holds its total.
	latest := func(metric string) int64 {
		mds := sink.AllMetrics()
		for i := len(mds) - 1; i >= 0; i-- {
			if v, ok := dropPoints(mds[i:i+1], metric)[label]; ok {
				return v
			}
		}
		return 0
	}
	require.Eventually(t, func() bool { return latest(metadata.MetricPktstatbpfNetworkFlowDropPackets) >= n }, 5*time.Second, 20*time.Millisecond,
		"no %d no_socket drops", n)
	require.NoError(t, rcv.Shutdown(context.Background()))
	require.Equal(t, int64(n), latest(metadata.MetricPktstatbpfNetworkFlowDropPackets))
	require.Equal(t, int64(n*(nettest.IPv4HeaderLen+nettest.UDPHeaderLen+size)), latest(metadata.MetricPktstatbpfNetworkFlowDropBytes))
}
