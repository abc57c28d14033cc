package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestTelegrafTCPFlags runs build/telegraf --once in tc mode over real TCP
// connections: the tcp_syn, tcp_synack, tcp_fin and tcp_rst fields of the
// connections' series equal the handshake arithmetic and nftables' counters
// of the same packets.
func TestTelegrafTCPFlags(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	nft := nettest.NFTTCPFlags(t, p.NSA, p.IfA)
	conf, out := onceConfig(t, p, "")
	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf, "--once", "--test-wait", fmt.Sprint(onceWait))
	proc.waitLog(t, "counting started", 60*time.Second)
	const k, refused, port, closed = 5, 3, 7301, 7399
	p.TCPExchanges(t, port, closed, k, refused)
	proc.wait(t, onceWait*time.Second+60*time.Second)
	ref := nft()

	// The last drain's cumulative counts: --once's one gather, right after
	// the start, may already hold the first exchanges.
	ms := lastDrain(readMetrics(t, out), "pktstat_bpf")
	sum := func(match func(telegraf.Metric) bool) (f [4]uint64, series int) {
		for _, m := range ms {
			if !match(m) {
				continue
			}
			series++
			for i, name := range []string{"tcp_syn", "tcp_synack", "tcp_fin", "tcp_rst"} {
				v, ok := m.GetField(name)
				require.True(t, ok, "TCP series without %s: %v", name, m)
				f[i] += v.(uint64)
			}
		}
		return f, series
	}
	tag := func(m telegraf.Metric, dir, portTag string, port int) bool {
		return m.Tags()["proto"] == "tcp" && m.Tags()["direction"] == dir && m.Tags()[portTag] == strconv.Itoa(port)
	}
	toPort, n := sum(func(m telegraf.Metric) bool { return tag(m, "egress", "dst_port", port) })
	require.Equal(t, k, n, "one egress series per connection:\n%s", dump(ms))
	require.Equal(t, [4]uint64{k, 0, k, 0}, toPort, "egress to port %d: SYN, SYN+ACK, FIN, RST", port)
	fromPort, _ := sum(func(m telegraf.Metric) bool { return tag(m, "ingress", "src_port", port) })
	require.Equal(t, [4]uint64{0, k, k, 0}, fromPort, "ingress from port %d", port)
	fromClosed, n := sum(func(m telegraf.Metric) bool { return tag(m, "ingress", "src_port", closed) })
	require.Equal(t, refused, n)
	require.Equal(t, [4]uint64{0, 0, 0, refused}, fromClosed, "ingress from the closed port %d", closed)
	egress, _ := sum(func(m telegraf.Metric) bool { return m.Tags()["proto"] == "tcp" && m.Tags()["direction"] == "egress" })
	require.Equal(t, [4]uint64{ref["out_syn"], ref["out_synack"], ref["out_fin"], ref["out_rst"]}, egress, "egress flags against nftables' output counters")
	ingress, _ := sum(func(m telegraf.Metric) bool { return m.Tags()["proto"] == "tcp" && m.Tags()["direction"] == "ingress" })
	require.Equal(t, [4]uint64{ref["in_syn"], ref["in_synack"], ref["in_fin"], ref["in_rst"]}, ingress, "ingress flags against nftables' input counters")
}
