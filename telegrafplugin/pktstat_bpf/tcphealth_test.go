package pktstat_bpf

import (
	"net/netip"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestRTTFields: rtt_min_us, rtt_mean_us and rtt_max_us appear only on
// series with RTT samples in the interval, merged over the series' records;
// retransmits on tc-mode series as in kprobe mode.
func TestRTTFields(t *testing.T) {
	tcp := core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("10.0.0.2"), SrcPort: 5000, DstPort: 80}
	other := tcp
	other.SrcPort = 5001
	rtt := core.RTTStats{Samples: 4, Sum: 10 * time.Millisecond, Min: 1500 * time.Microsecond, Max: 4 * time.Millisecond}
	t1 := t0.Add(10 * time.Second)
	f := &fakeSource{snapshots: []core.Snapshot{
		{Time: t0, Records: first(
			core.Record{FlowKey: tcp, Packets: 10, Bytes: 1000, Retransmits: 2, DeltaRetransmits: 2, RTT: &rtt},
			core.Record{FlowKey: other, Packets: 1, Bytes: 100},
		)},
		{Time: t1, Records: []core.Record{{FlowKey: tcp, Packets: 11, Bytes: 1100, DeltaPackets: 1, DeltaBytes: 100, Retransmits: 2}}},
	}}
	p := withFake(&PktstatBPF{TCPRTT: true}, f)
	require.NoError(t, p.Init())
	var acc testutil.Accumulator
	require.NoError(t, p.Start(&acc))
	require.NoError(t, p.Gather(&acc))
	require.NoError(t, p.Gather(&acc))
	tags := func(sport string) map[string]string {
		return map[string]string{"direction": "egress", "ip_version": "4", "proto": "tcp",
			"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": sport, "dst_port": "80"}
	}
	var flows []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurement {
			flows = append(flows, m)
		}
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New(measurement, tags("5000"), map[string]interface{}{"packets": uint64(10), "bytes": uint64(1000), "retransmits": uint64(2),
			"rtt_min_us": uint64(1500), "rtt_mean_us": 2500.0, "rtt_max_us": uint64(4000),
			"tcp_syn": uint64(0), "tcp_synack": uint64(0), "tcp_fin": uint64(0), "tcp_rst": uint64(0)}, t0, telegraf.Counter),
		counter(tags("5001"), 1, 100, t0),
		metric.New(measurement, tags("5000"), map[string]interface{}{"packets": uint64(11), "bytes": uint64(1100), "retransmits": uint64(2),
			"tcp_syn": uint64(0), "tcp_synack": uint64(0), "tcp_fin": uint64(0), "tcp_rst": uint64(0)}, t1, telegraf.Counter),
		counter(tags("5001"), 1, 100, t1),
	}, flows, testutil.SortMetrics())
}

// TestTCPHealthOnVeth runs the input on a real kernel in tc mode with
// tcp_rtt: after induced loss, the client's egress series carries exactly
// the socket's tcpi_total_retrans as retransmits, and RTT fields with
// min <= mean <= max, the min no lower than the socket's tcpi_min_rtt.
func TestTCPHealthOnVeth(t *testing.T) {
	nettest.RequireBPF(t)
	nettest.RequireTracepoints(t, "tcp_probe", "tcp_retransmit_skb")
	p := nettest.NewPair(t)
	plugin := &PktstatBPF{Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), TCPRTT: true, Log: testutil.Logger{}}
	require.NoError(t, plugin.Init())
	var acc testutil.Accumulator
	require.NoError(t, plugin.Start(&acc))
	defer plugin.Stop()

	cli, srvAddr := netip.AddrPortFrom(p.A4, 43041), netip.AddrPortFrom(p.B4, 7341)
	conn, retrans := p.LossyExchange(t, cli, srvAddr, 20)
	info := nettest.TCPInfo(t, conn)
	require.NoError(t, plugin.Gather(&acc))

	var got telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurement && m.Tags()["direction"] == "egress" && m.Tags()["src_port"] == "43041" {
			require.Nil(t, got, "two egress series from %s", cli)
			got = m
		}
	}
	require.NotNil(t, got, "no egress series from %s", cli)
	fields := got.Fields()
	require.Equal(t, uint64(retrans), fields["retransmits"], "retransmits vs tcpi_total_retrans")
	lo, mean, hi := fields["rtt_min_us"].(uint64), fields["rtt_mean_us"].(float64), fields["rtt_max_us"].(uint64)
	require.GreaterOrEqual(t, lo, uint64(info.Min_rtt), "rtt_min_us below tcpi_min_rtt")
	require.True(t, float64(lo) <= mean && mean <= float64(hi) && hi < 200000, "rtt %d <= %f <= %d < 200 ms", lo, mean, hi)
	t.Logf("retransmits %v (tcpi_total_retrans %d), rtt_min_us %d rtt_mean_us %.1f rtt_max_us %d (tcpi_min_rtt %d us)",
		fields["retransmits"], retrans, lo, mean, hi, info.Min_rtt)
}
