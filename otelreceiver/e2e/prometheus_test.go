package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/promtest"
)

// distDir holds the dashboards and rules the receiver ships.
var distDir = filepath.Join("..", "dist")

func TestPromtoolRules(t *testing.T) {
	promtool := promtest.RequireTool(t, "promtool")
	dir := filepath.Join(distDir, "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "pktstat-bpf.rules.yaml"},
		{"test", "rules", "pktstat-bpf.rules.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		require.Contains(t, string(out), "SUCCESS")
	}
}

// TestDashboardAgainstPrometheus: Debian's Prometheus scrapes
// build/otelcol-pktstat (run with the `make run` config) while the test
// sends known traffic; every panel of dist/grafana/pktstat-bpf-prometheus.json
// is evaluated through Prometheus's HTTP API over exactly the window of that
// traffic and compared with it, and the alerting rules load and stay quiet.
func TestDashboardAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs and runs the collector and Prometheus")
	}
	bin := collectorPath(t)
	p := nettest.NewPair(t)
	collectorPort := promtest.FreePort(t, p.NSPathA())
	c := startCollectorArgs(t, "collector", p.NSA, bin, runConfigArgs(p.IfA, "500ms", collectorPort), nil)
	require.True(t, c.logged(`"interface": "`+p.IfA+`"`), "collector did not log attaching to %s:\n%s", p.IfA, c.logText())
	prom := promtest.Start(t, p.NSA, p.NSPathA(), "127.0.0.1:"+collectorPort, filepath.Join(distDir, "prometheus", "pktstat-bpf.rules.yaml"))
	host, err := os.Hostname()
	require.NoError(t, err)

	flows := []nettest.Flow{
		{N: 20, Payload: 300, SrcPort: 41200, DstPort: 9300},
		{N: 10, Payload: 1000, SrcPort: 41201, DstPort: 9301, V6: true},
		{N: 15, Payload: 200, SrcPort: 41202, DstPort: 9302, FromB: true},
	}
	start, end, measured := prom.Measure(t, p, flows, func() map[string]uint64 {
		got := map[string]uint64{}
		for _, s := range prom.Query(t, `pktstatbpf_network_flow_bytes_total{network_transport="udp"}`, promtest.Now()) {
			got[s.Labels["source_port"]] = uint64(s.Value)
		}
		return got
	})

	b := func(port uint16) float64 { return measured[port] }
	tx, rx := b(41200)+b(41201), b(41202)
	prom.CheckDashboard(t, filepath.Join(distDir, "grafana", "pktstat-bpf-prometheus.json"), start, end,
		map[string]string{"host": host},
		map[string]promtest.Want{
			"Top talkers (bytes/s)": {Values: map[string]float64{
				"192.0.2.1 → 192.0.2.2":     b(41200),
				"2001:db8::1 → 2001:db8::2": b(41201),
				"192.0.2.2 → 192.0.2.1":     b(41202),
			}, Rate: true},
			"Traffic by direction (bytes/s)":            {Values: map[string]float64{"transmit": tx, "receive": rx}, Rate: true},
			"Traffic by protocol (bytes/s)":             {Values: map[string]float64{"ipv4 udp": b(41200) + b(41202), "ipv6 udp": b(41201)}, Rate: true},
			"Traffic by application protocol (bytes/s)": {Values: map[string]float64{"": tx + rx}, Rate: true},
			"Bytes in the time range by direction":      {Values: map[string]float64{"transmit": tx, "receive": rx}},
			"Overflow (packets/s)":                      {Values: map[string]float64{host: 0}, Rate: true},
			"Flow table fill":                           {Values: map[string]float64{host: 3.0 / 131072}},
			"Hooks by state":                            {Values: map[string]float64{"attached": 2, "failed": 0}},
			// A drain takes less than the 500ms collection_interval.
			"Drain time (s)": {Between: &[2]float64{0, 0.5}},
		})

	// The rules load, are healthy, and nothing in this quiet run fires.
	prom.CheckQuietRules(t, "PktstatBPFOverflowGrowing", "PktstatBPFHookFailed", "PktstatBPFHookNotFirst", "PktstatBPFDrainSlow")
}
