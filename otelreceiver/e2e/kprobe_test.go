package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/internal/kprobetest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestDistributionKprobeMode runs build/otelcol-pktstat in kprobe mode (which
// the host cannot: make vmtest runs it in a guest kernel with kprobes and
// fentry) while this process sends one TCP write that B drops for a while:
// the sender's transmit series is on a resource with this process's pid and
// comm, and counts exactly one packet (one sendmsg) of the written bytes and
// the kernel's own retransmission count (tcpi_total_retrans).
func TestDistributionKprobeMode(t *testing.T) {
	nettest.RequireBPF(t)
	bin := collectorPath(t)
	kprobetest.Require(t)
	p := nettest.NewPair(t)
	dir := t.TempDir()
	out, conf := filepath.Join(dir, "metrics.json"), filepath.Join(dir, "capture-kprobe.yaml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
receivers:
  pktstatbpf:
    mode: kprobe
    dimensions: [direction, ip_version, proto, src_ip, dst_ip, src_port, dst_port, pid, comm]
    collection_interval: 1s
    initial_delay: 0s
    # Off by default: only kprobe mode fills it.
    metrics:
      pktstatbpf.network.flow.tcp.retransmits:
        enabled: true
exporters:
  file:
    path: %q
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [pktstatbpf]
      exporters: [file]
`, out)), 0o644))
	c := startCollector(t, "kprobe collector", p.NSA, bin, conf, nil)

	const payload = 100
	cli, srv := netip.AddrPortFrom(p.A4, 43072), netip.AddrPortFrom(p.B4, 7372)
	retrans := p.SendTCPWithLoss(t, cli, srv, payload)
	time.Sleep(2500 * time.Millisecond) // a scrape after the last retransmission
	c.stop(t)

	comm, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	got, resources := senderSeries(t, out, cli, srv)
	want := map[string]int64{
		"pktstatbpf.network.flow.packets":         1,
		"pktstatbpf.network.flow.bytes":           payload,
		"pktstatbpf.network.flow.tcp.retransmits": int64(retrans),
	}
	require.Equal(t, want, got, "last values of the sender's transmit series; %d retransmissions in tcpi_total_retrans", retrans)
	wantRes := fmt.Sprintf("process.pid=%d pktstatbpf.process.comm=%s", os.Getpid(), strings.TrimSpace(string(comm)))
	require.Equal(t, []string{wantRes}, resources, "resources of the sender's series")
	t.Logf("the collector reported %d retransmissions, as the kernel's tcp_info", retrans)
}

// senderSeries returns the last value of each metric whose points carry the
// flow cli → srv in the transmit direction, and the distinct resources
// (pid and comm) those points came with.
func senderSeries(t *testing.T, path string, cli, srv netip.AddrPort) (map[string]int64, []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	values := map[string]int64{}
	seen := map[string]bool{}
	var resources []string
	var um pmetric.JSONUnmarshaler
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 16<<20), 16<<20)
	for sc.Scan() {
		md, err := um.UnmarshalMetrics(sc.Bytes())
		require.NoError(t, err, "file exporter line")
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			rm := md.ResourceMetrics().At(i)
			res := fmt.Sprintf("process.pid=%s pktstatbpf.process.comm=%s",
				attrString(rm.Resource().Attributes(), "process.pid"), attrString(rm.Resource().Attributes(), "pktstatbpf.process.comm"))
			for j := 0; j < rm.ScopeMetrics().Len(); j++ {
				ms := rm.ScopeMetrics().At(j).Metrics()
				for k := 0; k < ms.Len(); k++ {
					m := ms.At(k)
					if m.Type() != pmetric.MetricTypeSum {
						continue
					}
					for l := 0; l < m.Sum().DataPoints().Len(); l++ {
						dp := m.Sum().DataPoints().At(l)
						a := dp.Attributes()
						str := func(k string) string { return attrString(a, k) }
						if str("network.io.direction") != "transmit" || str("source.address") != cli.Addr().String() ||
							str("source.port") != fmt.Sprint(cli.Port()) || str("destination.port") != fmt.Sprint(srv.Port()) {
							continue
						}
						values[m.Name()] = dp.IntValue()
						if !seen[res] {
							seen[res] = true
							resources = append(resources, res)
						}
					}
				}
			}
		}
	}
	return values, resources
}

// attrString is attribute k of a as a string, "" when a has none (a missing
// attribute's zero Value must not be used).
func attrString(a pcommon.Map, k string) string {
	v, ok := a.Get(k)
	if !ok {
		return ""
	}
	return v.AsString()
}
