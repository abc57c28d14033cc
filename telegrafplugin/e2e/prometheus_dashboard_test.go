package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/promtest"
)

func TestPromtoolRules(t *testing.T) {
	promtool := promtest.RequireTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "pktstat-bpf.rules.yaml"},
		{"test", "rules", "pktstat-bpf.rules.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join("..", "dist", "prometheus")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		require.Contains(t, string(out), "SUCCESS")
	}
}

// TestPrometheusDashboard: Debian's Prometheus scrapes build/telegraf's
// outputs.prometheus_client while the test sends known traffic; every panel
// of dist/grafana/pktstat-bpf-prometheus.json is evaluated through the HTTP
// API over exactly the window of the measured traffic and compared with it,
// and the alerting rules load and stay quiet.
func TestPrometheusDashboard(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	const host = "pktstat-e2e"
	addr := "127.0.0.1:" + promtest.FreePort(t, p.NSPathA())
	runTelegraf(t, p, telegrafBin, dashboardConfig(host, p.IfA)+fmt.Sprintf(`
[[outputs.prometheus_client]]
  listen = %q
  collectors_exclude = ["gocollector", "process"]
`, addr))
	prom := promtest.Start(t, p.NSA, p.NSPathA(), addr, filepath.Join("..", "dist", "prometheus", "pktstat-bpf.rules.yaml"))

	start, end, measured := prom.Measure(t, p, dashboardFlows(44001), func() map[string]uint64 {
		got := map[string]uint64{}
		for _, s := range prom.Query(t, `pktstat_bpf_bytes{proto="udp"}`, promtest.Now()) {
			got[s.Labels["src_port"]] = uint64(s.Value)
		}
		return got
	})

	m := func(port uint16) float64 { return measured[port] }
	egress, ingress := m(44001)+m(44002), m(44003)
	prom.CheckDashboard(t, filepath.Join("..", "dist", "grafana", "pktstat-bpf-prometheus.json"), start, end,
		map[string]string{"host": host},
		map[string]promtest.Want{
			"Top talkers (bytes/s)": {Values: map[string]float64{
				"192.0.2.1 → 192.0.2.2":     m(44001),
				"2001:db8::1 → 2001:db8::2": m(44002),
				"192.0.2.2 → 192.0.2.1":     m(44003),
			}, Rate: true},
			"Traffic by direction (bytes/s)":            {Values: map[string]float64{"egress": egress, "ingress": ingress}, Rate: true},
			"Traffic by protocol (bytes/s)":             {Values: map[string]float64{"IPv4 udp": m(44001) + m(44003), "IPv6 udp": m(44002)}, Rate: true},
			"Traffic by application protocol (bytes/s)": {Values: map[string]float64{"": egress + ingress}, Rate: true},
			"Bytes in the time range by direction":      {Values: map[string]float64{"egress": egress, "ingress": ingress}},
			"Overflow (packets/s)":                      {Values: map[string]float64{host: 0}, Rate: true},
			"Flow table fill":                           {Values: map[string]float64{host: 3.0 / 131072}},
			"Hooks attached and failed":                 {Values: map[string]float64{host + " attached": 2, host + " failed": 0}},
			// A drain takes less than the 1s interval.
			"Drain time (s)": {Between: &[2]float64{0, 1}},
		})

	// The rules load, are healthy, and nothing in this quiet run fires.
	prom.CheckQuietRules(t, "PktstatBPFOverflowGrowing", "PktstatBPFHookFailed", "PktstatBPFHookNotFirst", "PktstatBPFDrainSlow")
}
